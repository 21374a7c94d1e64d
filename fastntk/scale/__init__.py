"""Stage 4: kernel matrices at scale.

    blocks     row blocks and tile pairs: how every path cuts a matrix into tiles
    tasks      tile tasks on this process's threads or a Dask cluster
    matrix     the lazy Dask kernel matrix and its resumable writer
    store      the zarr store format (marker, blocks, writer locks)
    cluster    Dask clients: threads, LocalCluster, a scheduler, SLURM (dask-jobqueue)
"""
