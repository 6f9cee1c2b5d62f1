# brainforge: two commands. `make demo` runs the main job, `make test` runs the suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo lint clean

install: $(STAMP)

# torch 2.14.1 + torchaudio 2.11.0 load together on CPU (braindecode imports torchaudio).
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet 'torch==2.14.1' 'torchaudio==2.11.0'
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

DEMO := runs/demo
DEMO_INPUTS := tests/data/sample_audvis_5s_raw.fif tests/data/test.edf tests/data/test_subsecond.edf tests/data/bti
DEMO_HELDOUT := tests/data/test_edf_stim_channel.edf
DEMO_STEPS ?= 60
DEMO_PRETRAIN := -c pretrain/configs/tiny.yaml --data.tokens $(DEMO)/tokens --data.val_tokens $(DEMO)/heldout_tokens \
	--model.tokenizer $(DEMO)/tokenizer_pkg --data.segment_windows 2 --trainer.default_root_dir $(DEMO)/pretrain

# The main job on bundled real recordings, one stage after another.
demo: install
	$(BIN)/python -m data prepare $(DEMO_INPUTS) --out $(DEMO)/shards --overwrite
	$(BIN)/python -m data prepare $(DEMO_HELDOUT) --out $(DEMO)/heldout --overwrite --quiet
	$(BIN)/python -m data inspect $(DEMO)/shards
	rm -rf $(DEMO)/tokenizer
	$(BIN)/python -m tokenizer fit -c tokenizer/configs/tiny.yaml --data.train $(DEMO)/shards --data.val $(DEMO)/heldout \
		--trainer.max_steps $(DEMO_STEPS) --trainer.default_root_dir $(DEMO)/tokenizer
	$(BIN)/python -m tokenizer export $(DEMO)/tokenizer --out $(DEMO)/tokenizer_pkg --overwrite
	$(BIN)/python -m tokenizer encode --tokenizer $(DEMO)/tokenizer_pkg --shards $(DEMO)/shards --out $(DEMO)/tokens --overwrite
	@echo "tokenizer metrics on the held-out recording ($(DEMO_HELDOUT)); plots in $(DEMO)/tokenizer_plots:"
	$(BIN)/python -m tokenizer eval --tokenizer $(DEMO)/tokenizer_pkg --shards $(DEMO)/heldout \
		--plots $(DEMO)/tokenizer_plots --save-to-package
	$(BIN)/python -m tokenizer encode --tokenizer $(DEMO)/tokenizer_pkg --shards $(DEMO)/heldout --out $(DEMO)/heldout_tokens --overwrite --quiet
	rm -rf $(DEMO)/pretrain
	$(BIN)/python -m pretrain fit $(DEMO_PRETRAIN) --model.warmup_steps 5 --trainer.max_steps 100
	@echo "masked-token accuracy per level against the unigram floor, on the held-out recording:"
	$(BIN)/python -m pretrain validate $(DEMO_PRETRAIN) --ckpt_path $(DEMO)/pretrain/checkpoints/last.ckpt
	$(BIN)/python -m pretrain export $(DEMO)/pretrain --out $(DEMO)/backbone_pkg --overwrite
	rm -rf $(DEMO)/finetune
	@echo "fine-tuning a probe on the bundled labelled sample tests/data/demo_task.csv (which amplifier recorded a 1 s segment):"
	$(BIN)/python -m finetune fit -c finetune/configs/probe.yaml --data.path tests/data/demo_task.csv \
		--model.backbone $(DEMO)/backbone_pkg --data.batch_size 4 --trainer.max_epochs 12 \
		--trainer.default_root_dir $(DEMO)/finetune --trainer.enable_progress_bar false
	$(BIN)/python -m finetune export $(DEMO)/finetune --registry $(DEMO)/registry --name demo
	@echo "predictions of the newest runs/demo/registry/demo version on a bundled recording:"
	$(BIN)/python -m finetune predict --model $(DEMO)/registry/demo tests/data/test.edf
	$(BIN)/python -m serve demo --registry $(DEMO)/registry --model demo tests/data/test.edf

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
