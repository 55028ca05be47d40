# One place for setup and the two commands of the README.
# `make demo`: grade a few example submissions of every finished assignment (local runner, CPU); `dlopt demo --all` grades them all.
# `make test`: the whole test suite, `dlopt check` of every finished assignment included.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DLOPT := $(VENV)/bin/dlopt
JOBS ?= 2
export OMP_NUM_THREADS ?= 1

.PHONY: setup system-packages demo test check lint bench serve docker-check clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# constraints.txt pins torch to the CPU build; the project itself asks only torch>=2.4.
	$(PIP) install -q -c constraints.txt -e '.[triton,server,docker,dev]'
	touch $@

setup: system-packages $(VENV)/.installed

# bubblewrap gives the sandbox its namespaces; without it grading still runs, marked weak.
system-packages:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -q bubblewrap >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null 2>&1)) \
	      && echo "installed bubblewrap" || echo "WARNING: could not install bubblewrap: the sandbox will be weak (rlimits only)"; \
	  else echo "WARNING: bubblewrap missing (apt-get install bubblewrap): the sandbox will be weak (rlimits only)"; fi; }
	@# Podman (a Docker-compatible API) and runc for the docker runner's tests (skipped without).
	@command -v podman >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -q podman runc >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q podman runc >/dev/null 2>&1)) \
	      && echo "installed podman" || echo "WARNING: could not install podman: the docker runner tests will be skipped"; \
	  else echo "WARNING: podman missing (apt-get install podman runc): the docker runner tests will be skipped"; fi; }
	@# Chromium for the server's browser tests (skipped, with the reason, without it).
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) \
	      && echo "installed chromium" || echo "WARNING: could not install chromium: the browser tests will be skipped"; \
	  else echo "WARNING: chromium missing (apt-get install chromium): the browser tests will be skipped"; fi; }

# Every finished assignment's examples through the docker runner (Podman's API here).
docker-check: setup
	$(PY) docker/podman_dev.py run -- $(DLOPT) check --examples --runner docker --jobs $(JOBS)

serve: setup
	$(DLOPT) serve

demo: setup
	$(DLOPT) demo --jobs $(JOBS)

check: setup
	$(DLOPT) check --jobs $(JOBS)

# pytest: $(JOBS) workers, each taking a whole test file at a time (many tests wait on timeouts and children).
test: setup
	$(VENV)/bin/ruff check autograder client reference server tests bench assignments docker
	$(DLOPT) check --examples --jobs $(JOBS)
	TRITON_INTERPRET=1 $(VENV)/bin/pytest -q -n $(JOBS) --dist loadfile --durations=15 tests

lint: setup
	$(VENV)/bin/ruff check autograder client reference server tests bench assignments docker

bench: setup
	$(PY) bench/overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
