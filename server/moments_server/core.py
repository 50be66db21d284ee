"""The core, built from Settings without any transport: the model's towers behind the Embedder, the store
behind the Catalog, and the services that the gRPC servicer (transport/) or a test calls with the core's
own types (service/requests.py)."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from moments_server.catalog.catalog import Catalog
from moments_server.config import Settings
from moments_server.inference.embedder import Embedder
from moments_server.inference.manifest import ModelManifest, load_manifest
from moments_server.inference.policy import policy_of
from moments_server.inference.sessions import load_towers, serving_provider
from moments_server.service.ingest import IngestService
from moments_server.service.search import SearchService
from moments_server.service.videos import VideoService
from moments_server.store.connector import Connector, StoreOptions, open_connector

log = logging.getLogger(__name__)


@dataclass
class Core:
    settings: Settings
    manifest: ModelManifest
    connector: Connector
    catalog: Catalog
    embedder: Embedder
    executor: ThreadPoolExecutor  # store calls and decoding threads
    ingest: IngestService
    search: SearchService
    videos: VideoService

    async def prepare(self) -> None:
        """Ready to serve: the descriptor set checked (or made), the metadata keys read, the sessions warm
        (and their batch sizes tuned), the batchers running."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self.catalog.ensure_descriptor_set)
        await loop.run_in_executor(self.executor, self.catalog.load_metadata_types)
        await loop.run_in_executor(None, self.embedder.warm_up, self.settings.autotune_batches)
        self.embedder.start()

    async def close(self) -> None:
        """After the transport stopped taking calls: pulls end "interrupted", the batchers drain."""
        await self.ingest.close()
        await self.embedder.stop()
        self.executor.shutdown(wait=True)
        self.connector.close()


def store_options(settings: Settings) -> StoreOptions:
    """How this server opens its store: the engine's options (--engine.*) and the SDK pool's."""
    engine = settings.engine
    return StoreOptions(
        omp_threads=engine.omp_threads or None,
        deferred_index=engine.deferred_index,
        read_cache_rows=engine.read_cache_rows,
        pool_size=settings.store_pool_size,
        full_import=settings.adb_full_import,
    )


def open_store(settings: Settings) -> Connector:
    """The store of --store (a read replica of it in a worker: --store-writer), opened with the settings' options."""
    return open_connector(settings.store, settings.store_writer, store_options(settings))


async def open_core(settings: Settings) -> Core:
    manifest = load_manifest(settings.model_dir)
    log.info(
        "model %s (%s), %d dims, descriptor set %s",
        manifest.name,
        manifest.pretrained or "no tag",
        manifest.embed_dim,
        manifest.descriptor_set,
    )
    executor = ThreadPoolExecutor(max_workers=settings.store_threads, thread_name_prefix="store")
    loop = asyncio.get_running_loop()
    connector = await loop.run_in_executor(executor, open_store, settings)
    policy = policy_of(serving_provider(settings.device), settings)
    text, image = await loop.run_in_executor(
        None,
        load_towers,
        manifest,
        settings.device,
        settings.threads,
        settings.ort_spinning,
        settings.fused_graphs,
        settings.cuda_graphs,
        policy.ingest_nice,
    )
    if text.provider != policy.provider:  # onnxruntime fell back from the provider asked for
        policy = policy_of(text.provider, settings)
    # image queries' own session, at normal priority (built here, in a thread that is not lowered)
    image_search = await loop.run_in_executor(None, image.twin) if policy.image_search_session else None
    embedder = Embedder(
        manifest,
        text,
        image,
        policy,
        settings.max_delay_ms / 1e3,
        settings.max_queue,
        settings.text_cache_size,
        image_search,
    )
    catalog = Catalog(
        connector, manifest.descriptor_set, manifest.embed_dim, manifest.identity(), settings.descriptor_engine
    )
    if connector.local_engine() is not None:
        # this process owns the store: a stream still "live" in it died with the previous server (the
        # launcher marks them for its workers; on an aperturedb:// store other servers may be streaming)
        await loop.run_in_executor(executor, catalog.interrupt_live_streams)
    return Core(
        settings,
        manifest,
        connector,
        catalog,
        embedder,
        executor,
        IngestService(settings, embedder, catalog, executor),
        SearchService(settings, embedder, catalog, executor),
        VideoService(settings, embedder, catalog, executor, connector.kind),
    )
