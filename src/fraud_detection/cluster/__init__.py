"""The pipeline on a Dask cluster (``engine: dask`` in params.yaml): task graphs only.

These modules build Dask graphs from the same pure kernels the local path calls; which
cluster runs them, and where files go, is fraud_detection.io.dask_cluster's and the
stage scripts' business.
"""
