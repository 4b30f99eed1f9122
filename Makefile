# streamrec — every target does its own set-up (setup is idempotent and quick the second time).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SR := $(VENV)/bin/streamrec
ARGS ?=
SET ?=
# SET="a.b=v c.d=w": each a --set before the command (a global option of streamrec)
SETS = $(foreach kv,$(SET),--set $(kv))

.PHONY: help setup up down status demo test test-fast reliability lint bench clean flink-up flink-down submit hdfs-up hdfs-down

help: ## this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: ## venv, project, Kafka + Flink connector + Hadoop jars (Maven Central), kcat, pushgateway, MovieLens-100K (idempotent)
	@bash deploy/setup.sh

up: setup ## start the local Apache Kafka broker (KRaft, free loopback port kept in .run/kafka) and the topics
	@$(SR) $(SETS) stack up

down: ## stop what `make up` started
	@if [ -x $(SR) ]; then $(SR) stack down; fi

status: ## what runs, topics and their message counts
	@$(SR) $(SETS) stack status

demo: setup ## the whole loop on MovieLens (ARGS="--limit 20000"; SET="k=v ..."; FLINK=1 on PyFlink; HDFS=1 to HDFS)
	@$(SR) $(SETS) demo $(if $(FLINK),--flink) $(if $(HDFS),--hdfs) $(ARGS)

test: setup ## the whole test suite (starts and stops its own services on free loopback ports)
	@$(VENV)/bin/pytest $(ARGS)

test-fast: setup ## unit tests only (no services)
	@$(VENV)/bin/pytest -m "not slow" $(ARGS)

reliability: setup ## kills, outages, hostile input, 10 min of sustained load: one table (.run/reliability.json)
	@STREAMREC_SUSTAIN_S=$${STREAMREC_SUSTAIN_S:-600} $(VENV)/bin/pytest -m reliability -p no:cacheprovider \
		--reliability-report .run/reliability.json $(ARGS); rc=$$?; \
		$(PY) -m jobs.reliability_report .run/reliability.json; exit $$rc

lint: setup ## ruff
	@$(VENV)/bin/ruff check .

bench: setup ## every benchmark in bench/, ratios against baselines of the same run
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

flink-up: setup ## start a local standalone Flink cluster (free loopback ports; conf, pids, logs in .run/flink)
	@$(SR) $(SETS) flink up

flink-down: ## stop the Flink cluster `make flink-up` started
	@if [ -x $(SR) ]; then $(SR) flink down; fi

submit: flink-up ## flink run -py jobs/flink_join.py on that cluster, detached (ARGS="--stop-offsets f.json" ...)
	@$(SR) $(SETS) flink submit $(ARGS)

hdfs-up: setup ## start a local test HDFS (NameNode + DataNode, WebHDFS; free loopback ports; .run/hdfs)
	@$(SR) $(SETS) hdfs up

hdfs-down: ## stop the HDFS `make hdfs-up` started (data stays in .run/hdfs)
	@if [ -x $(SR) ]; then $(SR) hdfs down; fi

clean: down flink-down hdfs-down ## remove run state (keeps the venv and vendored binaries)
	rm -rf .run
