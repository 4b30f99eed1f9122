#!/usr/bin/env bash
# make setup: venv + project, the JVM parts from Maven Central (deploy/pom.xml), MovieLens-100K.
# Idempotent: each step is skipped when its result is already there (stamps carry a hash of their inputs).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENDOR=.vendor
# pip on these machines warns about a missing local index on every package: keep real output only
without_index_noise() { "$@" 2>&1 | { grep -v -e "is ignored: it is neither a file nor a directory" -e "^recbole 1.2.1 requires" -e "dependency resolver does not currently take into account" || true; }; }
t0=$(date +%s)

# the client's C module (setup.py) is built by this install: its source is in the stamp, so a change rebuilds it
stamp=.venv/.installed-$(cat pyproject.toml setup.py streamrec/applog/_native.c | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  without_index_noise .venv/bin/pip install -q --disable-pip-version-check -e ".[pipeline,serving,dev]"
  rm -f .venv/.installed-*; touch "$stamp"
fi

# Apache Kafka, the Flink Kafka connector, Hadoop (daemons) and Hadoop's client (for Flink), each into its own
# folder: `streamrec setup` (deploy/jvm.py fetch_jars, what a wheel user runs), skipping parts fetched from this pom.
command -v mvn >/dev/null || { echo "setup: Maven (mvn) is needed for the JVM parts (apt-get install maven)" >&2; exit 1; }
.venv/bin/streamrec setup --dest "$VENDOR" | sed 's/^/setup: /'

# `flink run` needs flink-python in PyFlink's lib/ (else ClassNotFoundException ExternalPythonProcessOperator).
PF=$(.venv/bin/python -c 'import importlib.util,os;print(os.path.dirname(importlib.util.find_spec("pyflink").origin))')
if ! ls "$PF"/lib/flink-python-*.jar >/dev/null 2>&1; then
  cp "$PF"/opt/flink-python-*.jar "$PF"/lib/
fi

# kcat: a plain external Kafka client, which the tests use to check the broker speaks to others.
if ! command -v kcat >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get install -y -q kcat || { apt-get update -q && apt-get install -y -q kcat; }; } >"$VENDOR/apt-kcat.log" 2>&1 \
      || echo "setup: could not install kcat (see $VENDOR/apt-kcat.log); the kcat test will fail" >&2
  else
    echo "setup: kcat is not installed (apt-get install kcat); the kcat test needs it" >&2
  fi
fi

# prometheus-pushgateway: the gateway the Flink metrics tests push to (Flink's pull reporter binds every interface).
if ! command -v prometheus-pushgateway >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get install -y -q prometheus-pushgateway \
      || { apt-get update -q && apt-get install -y -q prometheus-pushgateway; }; } >"$VENDOR/apt-pushgateway.log" 2>&1 \
      || echo "setup: could not install prometheus-pushgateway (see $VENDOR/apt-pushgateway.log); the Flink metrics tests will fail" >&2
  else
    echo "setup: prometheus-pushgateway is not installed (apt-get install prometheus-pushgateway); the Flink metrics tests need it" >&2
  fi
fi

# kustomize (renders deploy/k8s for the manifest test), built from the Go module proxy.
KUSTOMIZE_VERSION=v5.7.1
if [ ! -x "$VENDOR/bin/kustomize" ] || ! "$VENDOR/bin/kustomize" version 2>/dev/null | grep -q "$KUSTOMIZE_VERSION"; then
  if command -v go >/dev/null; then
    mkdir -p "$VENDOR/bin"
    GOBIN="$PWD/$VENDOR/bin" GOFLAGS=-mod=mod go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" \
      >"$VENDOR/go-kustomize.log" 2>&1 || { cat "$VENDOR/go-kustomize.log" >&2; echo "setup: kustomize failed" >&2; exit 1; }
  else
    echo "setup: Go is not installed; the manifest test needs kustomize (go install sigs.k8s.io/kustomize/kustomize/v5)" >&2
  fi
fi

# MovieLens-100K ships inside recbole; its licence forbids redistribution, so it is installed, never committed.
if ! .venv/bin/python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('recbole') is None)"; then
  without_index_noise .venv/bin/pip install -q --disable-pip-version-check --no-deps "recbole==1.2.1"
fi

echo "setup ok in $(( $(date +%s) - t0 ))s: $(.venv/bin/python --version), Kafka $(ls $VENDOR/kafka/kafka_2.13-*.jar | sed 's/.*kafka_2.13-\(.*\)\.jar/\1/'), Hadoop $(ls $VENDOR/hadoop/hadoop-hdfs-3*.jar | sed 's/.*hadoop-hdfs-\(.*\)\.jar/\1/')"
