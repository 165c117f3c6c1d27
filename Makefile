# Shortcuts for the README's commands.
.PHONY: setup test quickstart lint
setup:
	bash scripts/setup.sh
test: setup
	HF_HUB_OFFLINE=1 python3 -m pytest
quickstart: setup
	HF_HUB_OFFLINE=1 ldlm quickstart
lint:
	ruff check . && duplicates --change
