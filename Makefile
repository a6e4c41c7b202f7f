# RainStorm: common tasks. The core needs only python3 (3.10+); tests use a local venv.
PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
CONFIG ?= config.ini
VM     ?= 02
RUN    := run
# Whether process $$pid runs: `kill -0` also succeeds for a killed node that no one has
# reaped yet (a zombie), e.g. in a container whose init does not reap.
ALIVE  = { kill -0 $$pid 2>/dev/null && ! grep -qs '^State:[[:space:]]*Z' /proc/$$pid/status; }

.PHONY: help venv test test-unit test-integration demo demo-membership cluster start stop \
        app-src introducer node status data clean bench bench-hydfs bench-stream bench-latency \
        bench-failover bench-membership app1 app2 bench-peers-venv chaos dashboard fuzz test-netns

help:
	@echo "make test              create .venv and run the whole test suite"
	@echo "make test-netns        the network-namespace tier alone (root: nodes with their own IPs)"
	@echo "make demo              a local 10-node cluster runs both RainStorm apps, killing 2 workers"
	@echo "make demo-membership   joins, kill -9 and a paused node on a local 10-node cluster"
	@echo "make dashboard         the live web page: starts the cluster if needed, a following job, the URL"
	@echo "make cluster / stop    start / stop the 10 nodes of $(CONFIG) in the background"
	@echo "make start VM=06       start (restart) one node in the background"
	@echo "make status            list_mem as node 01 sees it"
	@echo "make introducer        run the introducer in the foreground (as on a course VM)"
	@echo "make node VM=03        run node 03 in the foreground (as on a course VM)"
	@echo "make data              traffic-signs CSV files in datasets/"
	@echo "make chaos             real clusters under a seeded nemesis, every round checked"
	@echo "make fuzz              100,000 fuzzed frames per node and port (UDP, TCP, HTTP) of 4 nodes, then"
	@echo "                       every node checked (about 12 min; FRAMES=, SEED= to change or replay)"
	@echo "                       (ROUNDS=20, SEED=first round's seed; one line per round)"
	@echo "make bench-latency     latency of two following jobs while a client appends 1k/10k/50k lines/s"
	@echo "                       (BENCH_ARGS='--seconds 5 --rates 1000,10000' for a quick run)"
	@echo "make bench-failover    the leader killed -9 mid-job, 10 times: new leader, first report, output"
	@echo "make bench-membership  detection after kill -9, false positives against loss, bandwidth, 10-50 nodes"
	@echo "                       (about 40 min; BENCH_ARGS=--quick for a 5-minute run)"
	@echo "make app1 / make app2  the two classic RainStorm apps on the running cluster (make cluster)"
	@echo "                       (LINES=1000|5000|10000, TASKS=3)"

$(VPY): requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(VPY)

venv: $(VPY)

test: $(VPY)
	$(VPY) -m pytest -q

test-unit: $(VPY)
	$(VPY) -m pytest -q tests/unit

test-integration: $(VPY)
	$(VPY) -m pytest -q tests/integration

# Nodes in network namespaces (tests/netns.py): needs root; part of `make test` when root.
test-netns: $(VPY)
	$(VPY) -m pytest -q tests/netns_tier

# The chaos suite (tests/chaos.py): ROUNDS rounds on a local cluster, each a job or HyDFS
# appends under one fault, checked against the oracle; SEED replays (default: the clock).
ROUNDS ?= 20
SEED   ?=
chaos: $(VPY)
	$(VPY) -m tests.chaos --rounds $(ROUNDS) $(if $(SEED),--seed $(SEED))

# The fuzzer (tests/fuzz.py): junk, lies and replays to every port of every node, then checks.
FRAMES ?= 100000
fuzz: $(VPY)
	$(VPY) -m tests.fuzz --frames $(FRAMES) $(if $(SEED),--seed $(SEED))

demo:
	$(PYTHON) -m demos.rainstorm_demo

demo-membership:
	$(PYTHON) -m demos.membership_demo

# The live page (http://127.0.0.1:8001/): the cluster of $(CONFIG) (started if it does not
# run), a following App 2 fed 200 signs/s until Ctrl-C; the cluster keeps running.
dashboard:
	$(PYTHON) -m demos.dashboard --config $(CONFIG) $(DASHBOARD_ARGS)

# The ten nodes of $(CONFIG), each in the background with its pid in run/; logs per config.
cluster:
	@mkdir -p $(RUN)
	@for f in $(RUN)/vm*.pid; do \
	  if [ -f $$f ] && pid=$$(cat $$f) && $(ALIVE); then \
	    echo "a cluster is already running ($$f); 'make stop' first"; exit 1; fi; done
	@$(PYTHON) rainstorm.py introducer --config $(CONFIG) </dev/null >$(RUN)/vm01.out 2>&1 & echo $$! >$(RUN)/vm01.pid
	@sleep 0.5
	@for vm in 02 03 04 05 06 07 08 09 10; do \
	  $(PYTHON) rainstorm.py node --vm $$vm --config $(CONFIG) </dev/null >$(RUN)/vm$$vm.out 2>&1 & \
	  echo $$! >$(RUN)/vm$$vm.pid; \
	done
	@for i in $$(seq 60); do \
	  n=$$($(PYTHON) rainstorm.py ctl --vm 01 --config $(CONFIG) --json list_mem 2>/dev/null | \
	       $(PYTHON) -c 'import json,sys; print(len(json.load(sys.stdin).get("members", [])))' 2>/dev/null); \
	  [ "$$n" = 10 ] && break; sleep 0.25; done; \
	for f in $(RUN)/vm*.pid; do pid=$$(cat $$f); $(ALIVE) || \
	  { echo "$$f: the node exited:"; tail -3 $${f%.pid}.out; }; done; \
	echo "$${n:-0} of 10 nodes joined (pids in $(RUN)/); 'make status' lists members, 'make stop' stops them"; \
	[ "$$n" = 10 ]

# One node in the background (e.g. restarting one that was killed).
start:
	@mkdir -p $(RUN)
	@vm=$$(printf %02d $$(expr "$(VM)" + 0)); \
	if [ -f $(RUN)/vm$$vm.pid ] && pid=$$(cat $(RUN)/vm$$vm.pid) && $(ALIVE); then \
	  echo "node $$vm is already running"; exit 1; fi; \
	introducer=$$($(PYTHON) -c "from cluster.config import load_config; print(load_config('$(CONFIG)').introducer)"); \
	role=$$([ "$$vm" = "$$introducer" ] && echo introducer || echo "node --vm $$vm"); \
	$(PYTHON) rainstorm.py $$role --config $(CONFIG) </dev/null >$(RUN)/vm$$vm.out 2>&1 & \
	echo $$! >$(RUN)/vm$$vm.pid; echo "started node $$vm (pid $$(cat $(RUN)/vm$$vm.pid))"

# SIGTERM: each node leaves the group gracefully; wait until they have exited.
stop:
	@for f in $(RUN)/vm*.pid; do [ -f $$f ] && kill $$(cat $$f) 2>/dev/null; done; \
	for f in $(RUN)/vm*.pid; do \
	  [ -f $$f ] || continue; pid=$$(cat $$f); \
	  for i in $$(seq 50); do $(ALIVE) || break; sleep 0.1; done; \
	  rm -f $$f; done; echo "stopped"

status:
	$(PYTHON) rainstorm.py ctl --vm 01 --config $(CONFIG) list_mem

introducer:
	$(PYTHON) rainstorm.py introducer --config $(CONFIG)

node:
	$(PYTHON) rainstorm.py node --vm $(VM) --config $(CONFIG)

data:
	@mkdir -p datasets
	@for n in 1000 5000 10000; do \
	  $(PYTHON) bench/gen_traffic_signs.py $$n datasets/TrafficSigns_$$n; done
	@ls -l datasets

# Benchmarks on real local clusters; results (markdown and JSON) go to bench/results/.
bench: bench-hydfs bench-stream

bench-hydfs:
	$(PYTHON) bench/hydfs_bench.py $(BENCH_ARGS)

# RainStorm vs a plain Python loop, and Bytewax / PySpark if $(PEERS_VENV) exists: the peer
# engines' own venv (`make bench-peers-venv`), kept out of the project's dependencies.
PEERS_VENV ?= /tmp/rainstorm-peers
bench-stream:
	$(PYTHON) bench/stream_bench.py --peers-venv $(PEERS_VENV) $(BENCH_ARGS)

# Following jobs (--follow): latency from an append returning to its rows in DEST, while one
# client appends at 1k, 10k and 50k lines/s; throughput, memory, exactly-once at the end.
bench-latency:
	$(PYTHON) bench/latency.py $(BENCH_ARGS)

bench-failover:
	$(PYTHON) bench/failover.py $(BENCH_ARGS)

# The failure detector: both modes, the seed's timings and fast ones (bench/results/membership.md).
bench-membership:
	$(PYTHON) bench/membership_bench.py $(BENCH_ARGS)

bench-peers-venv:
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet --disable-pip-version-check bytewax==0.21.1 pyspark==4.3.0

# The two classic applications (INTERFACE.md) on the cluster `make cluster` started: the
# source file is put into HyDFS once; each run writes a new DEST (appN_out_<time>).
LINES ?= 1000
TASKS ?= 3
CTL   := $(PYTHON) rainstorm.py ctl --vm 01 --config $(CONFIG)
SRC   := TrafficSigns_$(LINES)

app-src: data
	@$(CTL) ls $(SRC) >/dev/null 2>&1 || $(CTL) create datasets/$(SRC) $(SRC)

app1: app-src
	$(CTL) RainStorm grep signs_select $(SRC) app1_out_$$(date +%H%M%S) $(TASKS) --op1-args "No Outlet"

app2: app-src
	$(CTL) RainStorm signs_by_category count $(SRC) app2_out_$$(date +%H%M%S) $(TASKS) --op1-args "Punched Telespar"

clean:
	rm -rf $(RUN) data logs datasets .pytest_cache
