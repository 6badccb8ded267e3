"""Pretrained-weights policy: explicit choices, offline fail-fast, local weight files, text-prototype cache.

Policy (applies to the timm ConvNeXt weights and to the open_clip CLIP towers alike):

* ``pretrained=True`` asks for the published weights. They are taken, in this order, from
  (1) a local file passed explicitly (``image_weights=`` / ``text_weights=``), (2) the local
  Hugging Face cache, (3) a download. Before a download, a connectivity probe of a few seconds
  (``$GIGACOUNT_NET_TIMEOUT``, default 3 s) runs; when there is no network, or the hub's offline mode
  is on (``HF_HUB_OFFLINE=1`` or ``GIGACOUNT_OFFLINE=1``), :class:`PretrainedWeightsUnavailable` is
  raised at once with a message that says how to pass a local file. There is no retry loop and no
  silent fallback to random weights.
* ``pretrained=None`` (or ``False``) is random initialisation. It is an explicit choice: it is
  logged and recorded in ``model.weights_info`` so that checkpoints and run manifests keep it.
* Text prototypes (the CLIP text embeddings of the bin prompts) are computed once and stored under
  ``cache_dir()/text_prototypes``, keyed by the CLIP model name, the weights (tag, file or random
  seed) and the prompt list. A rebuild with the same key loads the file and never builds the text
  tower (nor needs the network); a damaged cache file is logged and recomputed.
* A weights file that cannot be read, or holds another model, raises :class:`WeightsFileError`
  naming the file.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from ..utils import atomic_write_bytes, cache_dir, get_logger

__all__ = [
    "PretrainedWeightsUnavailable", "WeightsFileError", "offline_mode", "network_available", "resolve_clip_weights",
    "resolve_timm_weights", "resolve_torchvision_convnext_weights", "TORCHVISION_CONVNEXT_TINY_URL",
    "build_clip_text_tower", "build_clip_visual", "compute_text_prototypes",
    "text_prototype_cache_path", "RANDOM_TEXT_SEED",
]

log = get_logger("models.pretrained")

HUB_HOST = "huggingface.co"
#: torchvision's ``ConvNeXt_Tiny_Weights.IMAGENET1K_V1`` (ImageNet-1k top-1 82.52%, torchvision docs).
TORCHVISION_CONVNEXT_TINY_URL = "https://download.pytorch.org/models/convnext_tiny-983f1562.pth"
RANDOM_TEXT_SEED = 0  # seed of a random-init text tower, so that random prototypes are reproducible
_CLIP_FILENAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_TIMM_FILENAMES = ("model.safetensors", "pytorch_model.bin")
_CACHE_VERSION = 1


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained weights were requested but are neither cached locally nor downloadable."""


class WeightsFileError(ValueError):
    """A weights file that cannot be read (damaged, empty, not a checkpoint) or belongs to another model."""


# ---------------------------------------------------------------------- connectivity
def offline_mode() -> bool:
    """True when the hub's offline mode (``HF_HUB_OFFLINE``) or ``GIGACOUNT_OFFLINE`` is set."""
    for var in ("HF_HUB_OFFLINE", "GIGACOUNT_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}:
            return True
    return False


def network_available(host: str = HUB_HOST, port: int = 443, timeout: float | None = None) -> bool:
    """A single TCP connection attempt to ``host:port``, bounded by ``timeout`` seconds in total.

    The attempt (DNS included) runs in a daemon thread so that a hanging resolver cannot stall the
    caller beyond ``timeout`` (default ``$GIGACOUNT_NET_TIMEOUT`` or 3 s). Offline mode short-cuts to False.
    """
    if offline_mode():
        return False
    timeout = float(os.environ.get("GIGACOUNT_NET_TIMEOUT", 3.0)) if timeout is None else float(timeout)
    result = {"ok": False}

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result["ok"] = True
        except Exception:  # noqa: BLE001 - any failure means "no network"; never an unhandled thread error
            result["ok"] = False

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result["ok"]) and not thread.is_alive()


def _cached_hub_file(repo_id: str | None, filenames: Sequence[str]) -> str | None:
    """Path of the first of ``filenames`` already in the local Hugging Face cache, else None (no network)."""
    if not repo_id:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub ships with timm/open_clip
        return None
    repo_id = repo_id.rstrip("/")
    for name in filenames:
        try:
            found = try_to_load_from_cache(repo_id=repo_id, filename=name)
        except Exception:  # noqa: BLE001 - a malformed cache is the same as no cache
            found = None
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def _check_local_file(path: str | os.PathLike, argument: str) -> str:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{argument}={str(path)!r}: no such weights file")
    return str(path.resolve())


def _unavailable(what: str, source: str, argument: str, hint: str,
                 host: str = HUB_HOST) -> PretrainedWeightsUnavailable:
    reason = ("offline mode is on (HF_HUB_OFFLINE/GIGACOUNT_OFFLINE)" if offline_mode()
              else f"{host} cannot be reached")
    return PretrainedWeightsUnavailable(
        f"pretrained {what} weights '{source}' were requested, but they are not in the local cache and "
        f"{reason}. Pass a local weights file with build_model(..., {argument}='/path/to/file') ({hint}), "
        f"or choose random initialisation explicitly with pretrained=None."
    )


# ---------------------------------------------------------------------- weight resolution
def resolve_clip_weights(clip_model: str, tag: str = "openai", weights_path: str | os.PathLike | None = None,
                         argument: str = "text_weights") -> tuple[str, str]:
    """Local path of open_clip weights ``clip_model``/``tag`` and a description for ``weights_info``.

    Fails fast with :class:`PretrainedWeightsUnavailable` when they cannot be had.
    """
    if weights_path is not None:
        path = _check_local_file(weights_path, argument)
        return path, f"file:{path}"
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg

    cfg = get_pretrained_cfg(clip_model, tag)
    if not cfg:
        raise ValueError(f"open_clip has no pretrained tag {tag!r} for model {clip_model!r}")
    hint = (f"a full open_clip/OpenAI CLIP checkpoint of {clip_model}, e.g. the file "
            f"'open_clip_pytorch_model.bin' of the Hugging Face repo {cfg.get('hf_hub', '').rstrip('/')} "
            f"or {cfg.get('url') or 'the open_clip release'}")
    cached = _cached_hub_file(cfg.get("hf_hub", ""), _CLIP_FILENAMES)
    if cached:
        return cached, f"open_clip:{clip_model}/{tag}"
    if not network_available():
        raise _unavailable(f"CLIP {clip_model}", tag, argument, hint)
    try:
        path = download_pretrained(cfg)
    except Exception as exc:  # noqa: BLE001
        raise _unavailable(f"CLIP {clip_model}", tag, argument, hint) from exc
    if not path:
        raise _unavailable(f"CLIP {clip_model}", tag, argument, hint)
    return path, f"open_clip:{clip_model}/{tag}"


def resolve_timm_weights(timm_name: str, weights_path: str | os.PathLike | None = None,
                         argument: str = "image_weights") -> tuple[str | None, str]:
    """Where timm should read ``timm_name`` weights from: a local file, or None to let timm download.

    Returns ``(file or None, description)``; raises :class:`PretrainedWeightsUnavailable` offline.
    """
    if weights_path is not None:
        path = _check_local_file(weights_path, argument)
        return path, f"file:{path}"
    import timm

    cfg = timm.models.get_pretrained_cfg(timm_name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    cached = _cached_hub_file(hub_id, _TIMM_FILENAMES)
    if cached:
        return cached, f"timm:{timm_name}"
    hint = (f"the timm checkpoint 'model.safetensors' of the Hugging Face repo {hub_id or timm_name}")
    if not network_available():
        raise _unavailable(f"timm {timm_name}", timm_name, argument, hint)
    return None, f"timm:{timm_name}"


def resolve_torchvision_convnext_weights(weights_path: str | os.PathLike | None = None,
                                        argument: str = "image_weights") -> tuple[str, str]:
    """Local path of torchvision's ConvNeXt-Tiny ImageNet checkpoint and a description.

    Order: ``weights_path``; torch hub's cache (``torch.hub.get_dir()/checkpoints``); a download
    (after the connectivity probe; the file's hash prefix is checked by torch). Raises
    :class:`PretrainedWeightsUnavailable` within seconds when none of these works.
    """
    if weights_path is not None:
        path = _check_local_file(weights_path, argument)
        return path, f"file:{path}"
    from urllib.parse import urlparse

    url = TORCHVISION_CONVNEXT_TINY_URL
    name = os.path.basename(urlparse(url).path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / name
    source = "torchvision:ConvNeXt_Tiny_Weights.IMAGENET1K_V1"
    if cached.is_file():
        return str(cached), source
    host = urlparse(url).hostname or url
    hint = f"torchvision's checkpoint {url} (a state dict with keys 'features.*')"
    if not network_available(host):
        raise _unavailable("torchvision ConvNeXt-Tiny", source, argument, hint, host=host)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(cached), hash_prefix=name.rsplit("-", 1)[-1].split(".")[0])
    except Exception as exc:  # noqa: BLE001
        raise _unavailable("torchvision ConvNeXt-Tiny", source, argument, hint, host=host) from exc
    return str(cached), source


# ---------------------------------------------------------------------- CLIP towers
def _clip_config(clip_model: str) -> dict:
    import open_clip

    cfg = open_clip.get_model_config(clip_model)
    if cfg is None:
        raise ValueError(f"unknown open_clip model {clip_model!r}")
    return cfg


def _full_clip_from_file(clip_model: str, path: str):
    import open_clip

    try:
        return open_clip.create_model(clip_model, pretrained=path, force_quick_gelu=True)
    except Exception as exc:  # noqa: BLE001 - damaged file or another model's weights
        detail = " ".join(str(exc).split())[:200] or "empty or truncated"
        raise WeightsFileError(f"{path}: cannot load it as open_clip {clip_model} weights ({type(exc).__name__}: "
                               f"{detail}); pass a full CLIP checkpoint of {clip_model} (e.g. the "
                               "open_clip_pytorch_model.bin of its Hugging Face repo)") from exc


def build_clip_text_tower(clip_model: str, weights_file: str | None = None) -> torch.nn.Module:
    """The CLIP text tower of ``clip_model`` as a module ``tokens (K, 77) -> embeddings (K, D)``.

    ``weights_file=None`` builds a random tower, seeded with :data:`RANDOM_TEXT_SEED` inside a forked
    RNG (the global RNG is not touched). QuickGELU is used, as in the OpenAI weights.
    """
    if weights_file is None:
        from open_clip.model import _build_text_tower

        cfg = _clip_config(clip_model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_TEXT_SEED)
            tower = _build_text_tower(cfg["embed_dim"], cfg["text_cfg"], quick_gelu=True)
        return tower.eval()
    model = _full_clip_from_file(clip_model, weights_file)

    class _TextOnly(torch.nn.Module):
        def __init__(self, clip) -> None:
            super().__init__()
            clip.visual = None  # drop the image tower; encode_text does not use it
            self.clip = clip

        def forward(self, tokens: Tensor) -> Tensor:
            return self.clip.encode_text(tokens)

    return _TextOnly(model).eval()


def build_clip_visual(clip_model: str, weights_file: str | None = None) -> torch.nn.Module:
    """The CLIP image tower of ``clip_model`` (random init when ``weights_file`` is None)."""
    if weights_file is None:
        from open_clip.model import _build_vision_tower

        cfg = _clip_config(clip_model)
        return _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"], quick_gelu=True)
    return _full_clip_from_file(clip_model, weights_file).visual


# ---------------------------------------------------------------------- text prototypes
def _weights_key(weights: str | None) -> str:
    if weights is None:
        return f"random(seed={RANDOM_TEXT_SEED})"
    if weights.startswith("file:"):
        path = Path(weights[5:])
        stat = path.stat()
        return f"file:{path}:{stat.st_size}:{stat.st_mtime_ns}"
    return weights


def text_prototype_cache_path(clip_model: str, weights: str | None, prompts: Sequence[str]) -> Path:
    """Cache file for the prototypes of ``prompts`` under ``clip_model`` and ``weights`` (tag, file or None)."""
    key = json.dumps({"version": _CACHE_VERSION, "clip_model": clip_model, "weights": _weights_key(weights),
                      "prompts": list(prompts)}, sort_keys=True)
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:20]
    tag = "random" if weights is None else ("file" if weights.startswith("file:") else weights)
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{clip_model}_{tag}")
    return cache_dir() / "text_prototypes" / f"{safe}_{digest}.pt"


def _read_prototype_cache(path: Path, n_prompts: int) -> tuple[Tensor, int] | None:
    """``(prototypes, text-tower parameters)`` from a cache file, or None (logged) when it is damaged."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        protos, n_params = blob["prototypes"], int(blob["text_tower_params"])
        if not torch.is_tensor(protos) or protos.ndim != 2 or protos.shape[0] != n_prompts \
                or not torch.isfinite(protos).all():
            raise ValueError(f"expected a finite ({n_prompts}, D) tensor of prototypes")
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError, UnpicklingError, ...
        log.warning("%s: damaged text-prototype cache file (%s: %s); recomputing it", path,
                    type(exc).__name__, " ".join(str(exc).split())[:200])
        return None
    return protos.float(), n_params


def compute_text_prototypes(clip_model: str, prompts: Sequence[str], *, pretrained: bool = True,
                            tag: str = "openai", weights_path: str | os.PathLike | None = None,
                            use_cache: bool = True) -> tuple[Tensor, dict[str, Any]]:
    """L2-normalised CLIP text embeddings of ``prompts``: ``(K, D)`` plus a description dict.

    ``pretrained=False`` (and no ``weights_path``) uses a random, seeded text tower; the result is
    recorded as random. With ``use_cache`` the embeddings are read from / written to
    :func:`text_prototype_cache_path`; the returned dict says whether the cache was hit.
    """
    prompts = [str(p) for p in prompts]
    if not prompts:
        raise ValueError("compute_text_prototypes: prompts is empty")
    if weights_path is not None:
        weights: str | None = f"file:{_check_local_file(weights_path, 'text_weights')}"
    elif pretrained:
        weights = f"open_clip:{clip_model}/{tag}"
    else:
        weights = None
    path = text_prototype_cache_path(clip_model, weights, prompts)
    info: dict[str, Any] = {"clip_model": clip_model, "weights": weights or f"random(seed={RANDOM_TEXT_SEED})",
                            "random_init": weights is None, "prompts": prompts, "cache_path": str(path),
                            "cache_hit": False}
    if use_cache and path.is_file():
        cached = _read_prototype_cache(path, len(prompts))
        if cached is not None:
            protos, n_params = cached
            info.update(cache_hit=True, text_tower_params=n_params)
            log.debug("text prototypes loaded from cache %s", path)
            return protos, info

    weights_file = None
    if weights is not None:
        weights_file, _ = resolve_clip_weights(clip_model, tag, weights_path)
    else:
        log.info("text prototypes for %s from a RANDOM-init text tower (pretrained text weights not requested)",
                 clip_model)
    import open_clip

    tower = build_clip_text_tower(clip_model, weights_file)
    n_params = sum(p.numel() for n, p in tower.named_parameters() if "visual" not in n
                   and not n.endswith("logit_scale") and not n.endswith("logit_bias"))
    tokens = open_clip.get_tokenizer(clip_model)(prompts)
    with torch.no_grad():
        protos = torch.nn.functional.normalize(tower(tokens).float(), dim=-1)
    info["text_tower_params"] = int(n_params)
    if use_cache:
        import io

        buffer = io.BytesIO()
        torch.save({"prototypes": protos.clone(), "text_tower_params": int(n_params), "prompts": prompts,
                    "clip_model": clip_model, "weights": info["weights"]}, buffer)
        atomic_write_bytes(path, buffer.getvalue())
    return protos, info
