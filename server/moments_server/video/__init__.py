"""Video core: spooling uploads to disk and decoding/sampling frames with PyAV."""
