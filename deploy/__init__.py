"""The local stack (broker, HDFS, Flink) that the Makefile and the tests start, and cluster manifests."""
