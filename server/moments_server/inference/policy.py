"""What serving does differently on the CPU and on CUDA, in one place: the batch caps, padding to warmed
buckets, and how ingest gives way to searches.

Figures behind the defaults (../shared/gpu/README.md for the card, bench figures for the CPU):
- CPU, 2 cores: both towers share the cores, so an image batch running beside a text query slows it as much as
  a queue would; ingest waits (up to ingest_defer_s) for pending searches and runs batches of
  ingest_batch_while_searching frames while searches are recent. Autotune keeps batches small (32 is the cap).
- CUDA, H200: the towers ran 2-3x more items/s at batch 256 than at 32 (autotune still picks the best bucket
  up to the cap). The CPU's waiting rule starved ingest on the card (4,460 -> 316 frames/s with one client
  searching every ~5 ms), so on CUDA ingest never waits; its batches are only bounded while searches are
  pending or recent: 64 frames take ~3 ms at ~20k frames/s, which bounds a query's wait behind one.
- Image queries (Search by image, Embed of images) run on the image tower too. On the CPU they get a session
  of their own (image_search_session), built at normal priority and run from a batcher of their own: in the
  ingest session they queued behind a running ingest batch and then ran in its lowered threads (bench figure
  4.image, ViT-B-32 on 2 cores: p99 under a backfill 2.8-3.0x idle). The second session's weights are a copy
  (onnxruntime's Python API shares initializers, but each session prepacks its own: +430 MiB RSS for
  ViT-B-32's image tower either way). On CUDA queries share the ingest session (nice does not apply there).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moments_server.config import Settings

CUDA = "CUDAExecutionProvider"


@dataclass(frozen=True)
class ServingPolicy:
    provider: str
    # Batches padded to the warmed bucket sizes, so that no request meets a shape the provider has not run
    # (CUDA: kernel choice and graph capture per shape; the CPU runs any shape at no extra cost).
    pad_to_buckets: bool
    text_max_batch: int
    image_max_batch: int
    # How long an ingest batch waits for the other tower's pending searches; 0 = never waits.
    ingest_defer_s: float
    # Ingest frames per batch while the other tower's searches are pending or recent (recent_search_s).
    ingest_batch_while_searching: int
    recent_search_s: float
    # Token-id lengths that get buffers of their own when padding to buckets (trimmed text batches are padded
    # up to the shortest that holds them, context_length last); () where any trimmed length runs as it is.
    text_lengths: tuple[int, ...] = ()
    # How much lower ingest work runs than searches (a nice increment, priority.py): the image tower's threads
    # and the upload decoders. On the CPU a query's text tower gets the cores first while an ingest batch runs;
    # 0 = the same priority.
    ingest_nice: int = 0
    # Image queries through a second image-tower session at normal priority, beside the ingest one (its own
    # batcher; ingest gives way to its searches as to the text tower's); False: they share the ingest session.
    image_search_session: bool = False

    @property
    def cuda(self) -> bool:
        return self.provider == CUDA


CPU_POLICY = ServingPolicy(
    provider="CPUExecutionProvider",
    pad_to_buckets=False,
    text_max_batch=32,
    image_max_batch=32,
    ingest_defer_s=0.5,
    ingest_batch_while_searching=2,
    recent_search_s=2.0,
    ingest_nice=10,
    image_search_session=True,
)

CUDA_POLICY = ServingPolicy(
    provider=CUDA,
    pad_to_buckets=True,
    text_max_batch=512,
    image_max_batch=256,
    ingest_defer_s=0.0,
    ingest_batch_while_searching=64,
    recent_search_s=2.0,
    # most queries are under 16 tokens; each length multiplies the warmed shapes (and CUDA graphs) by one
    text_lengths=(16, 32),
)


def serving_policy(
    provider: str,
    *,
    text_max_batch: int | None = None,
    image_max_batch: int | None = None,
    ingest_defer_s: float | None = None,
    ingest_batch_while_searching: int | None = None,
    recent_search_s: float | None = None,
    ingest_nice: int | None = None,
    image_search_session: bool | None = None,
) -> ServingPolicy:
    """The provider's policy (any provider but CUDA serves by the CPU's), with each explicit setting over it."""
    base = CUDA_POLICY if provider == CUDA else replace(CPU_POLICY, provider=provider)
    return ServingPolicy(
        provider=base.provider,
        pad_to_buckets=base.pad_to_buckets,
        text_max_batch=base.text_max_batch if text_max_batch is None else text_max_batch,
        image_max_batch=base.image_max_batch if image_max_batch is None else image_max_batch,
        ingest_defer_s=base.ingest_defer_s if ingest_defer_s is None else ingest_defer_s,
        ingest_batch_while_searching=(
            base.ingest_batch_while_searching if ingest_batch_while_searching is None else ingest_batch_while_searching
        ),
        recent_search_s=base.recent_search_s if recent_search_s is None else recent_search_s,
        text_lengths=base.text_lengths,
        ingest_nice=base.ingest_nice if ingest_nice is None else ingest_nice,
        image_search_session=base.image_search_session if image_search_session is None else image_search_session,
    )


def policy_of(provider: str, settings: Settings) -> ServingPolicy:
    """The policy for `provider` under the server's settings (each one set explicitly wins)."""
    return serving_policy(
        provider,
        text_max_batch=settings.text_max_batch,
        image_max_batch=settings.image_max_batch,
        ingest_defer_s=settings.ingest_defer_s,
        ingest_batch_while_searching=settings.ingest_batch_while_searching,
        recent_search_s=settings.recent_search_s,
        ingest_nice=settings.ingest_nice,
        image_search_session=settings.image_search_session,
    )
