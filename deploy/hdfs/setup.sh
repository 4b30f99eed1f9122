#!/usr/bin/env bash
# A real single-node HDFS (Hadoop 2.7.3 NameNode + DataNode with WebHDFS) for tests and `make hdfs-up`.
# Apache Hadoop is not on PyPI or Debian here, but the PyPI sdist pyspark==2.4.8 ships the Hadoop
# 2.7.3 jars (hadoop-hdfs included) and Debian ships the Jersey 1 jars WebHDFS needs.
# Result: .vendor/hdfs/lib/*.jar and .vendor/hdfs/res/webapps/* (stub UI dirs HttpServer2 looks up).
# Idempotent: a stamp file skips everything the second time.
set -euo pipefail
cd "$(dirname "$0")/../.."
H=${HDFS_HOME:-.vendor/hdfs}
STAMP="$H/.installed-hadoop-2.7.3-v1"
[ -f "$STAMP" ] && { echo "hdfs ok: $H (Hadoop 2.7.3)"; exit 0; }
PY=${PYTHON:-python3}
rm -rf "$H/dl" "$H/lib"
mkdir -p "$H/dl" "$H/lib" "$H/debs"
for w in hdfs datanode secondary journal static; do mkdir -p "$H/res/webapps/$w"; done
echo ok > "$H/res/webapps/hdfs/index.html"

# 1. Hadoop 2.7.3 and its dependencies from the pyspark sdist. pip prepares the sdist's metadata even
#    for a download; that needs --no-build-isolation (isolated, it fails on pypandoc) and so a current
#    setuptools in the pip's own environment: a throwaway venv, not the project's.
"$PY" -m venv "$H/dl/venv"
"$H/dl/venv/bin/pip" install -q --disable-pip-version-check "setuptools>=70.1" wheel
"$H/dl/venv/bin/pip" download -q --disable-pip-version-check --no-deps --no-build-isolation -d "$H/dl" "pyspark==2.4.8"
tar xzf "$H/dl/pyspark-2.4.8.tar.gz" -C "$H/dl" --wildcards '*/deps/jars/*'
S="$H/dl/pyspark-2.4.8/deps/jars"
JARS="hadoop-annotations-2.7.3 hadoop-auth-2.7.3 hadoop-common-2.7.3 hadoop-hdfs-2.7.3
  guava-14.0.1 jetty-6.1.26 jetty-util-6.1.26 javax.servlet-api-3.1.0
  commons-cli-1.2 commons-codec-1.10 commons-collections-3.2.2 commons-configuration-1.6 commons-io-2.4
  commons-lang-2.6 commons-logging-1.1.3 commons-math3-3.4.1 commons-net-3.1 commons-compress-1.20
  commons-beanutils-1.9.4 commons-digester-1.8 commons-httpclient-3.1
  log4j-1.2.17 slf4j-api-1.7.16 slf4j-log4j12-1.7.16 protobuf-java-2.5.0 jackson-core-asl-1.9.13
  jackson-mapper-asl-1.9.13 xmlenc-0.52 netty-3.9.9.Final netty-all-4.1.47.Final htrace-core-3.1.0-incubating
  leveldbjni-all-1.8 xercesImpl-2.9.1 gson-2.2.4 avro-1.8.2 paranamer-2.8 jsr305-1.3.9 zookeeper-3.4.6
  curator-client-2.7.1 curator-framework-2.7.1 httpclient-4.5.6 httpcore-4.4.10 xz-1.5 activation-1.1.1
  jaxb-api-2.2.2"
for j in $JARS; do cp "$S/$j.jar" "$H/lib/"; done

# 2. Jersey 1 (WebHDFS REST resources) from Debian, unpacked locally (no root needed for `apt-get download`).
(cd "$H/debs" && rm -rf root ./*.deb \
  && { apt-get download -q libjsr311-api-java libjersey1-core-java libjersey1-server-java libjersey1-servlet-java \
        >apt.log 2>&1 || { cat apt.log >&2; exit 1; }; } \
  && for d in ./*.deb; do dpkg-deb -x "$d" root; done)
for j in jersey1-core jersey1-server jersey1-servlet jsr311-api; do
  cp -L "$H/debs/root/usr/share/java/$j.jar" "$H/lib/"
done

rm -rf "$H/dl" "$H/debs"
touch "$STAMP"
echo "hdfs ok: $H ($(du -sh "$H/lib" | cut -f1) of jars, Hadoop 2.7.3)"
