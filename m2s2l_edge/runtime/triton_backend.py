"""Triton client backend: a model served by NVIDIA Triton Inference Server, run through ``tritonclient``.

``--server grpc://HOST:8001`` or ``http://HOST:8000`` with ``--model NAME`` (a model of a repository written by
``m2s2l-edge serve triton-repo``). Everything a local backend reads from its file — clip length, resolution, λ,
normalisation, a calibration — is read from the server, from the model configuration's ``m2s2l.*`` parameters.

The served model is stateless (one request = complete clips), so a lost connection loses nothing but the request in
flight: ``run`` reconnects and resends it, up to ``run_retries`` times ``retry_wait`` seconds apart, then raises a
RuntimeError that names the server. Opening the backend uses ``retries`` (default 3), so a server that is down at
start is reported at once, while a long ``run_retries`` lets a long-running client (``watch``) wait out a server
restart with its cameras' windows intact. Each thread gets its own client (tritonclient's HTTP client is not
thread-safe), so several cameras or benchmark threads can share one backend.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from urllib.parse import urlsplit

import numpy as np

from m2s2l_edge.runtime.base import TensorSpec
from m2s2l_edge.runtime.batching import check_clips
from m2s2l_edge.urls import redact, redact_text, split_credentials

logger = logging.getLogger(__name__)

SCHEMES = {"grpc": 8001, "http": 8000, "https": 443}
PARAM_METADATA = "m2s2l.metadata"  # written by m2s2l_edge.serve.triton_repo
PARAM_CALIBRATION = "m2s2l.calibration"


def parse_server_url(url: str) -> tuple[str, str]:
    """``grpc://HOST[:PORT]`` / ``http[s]://HOST[:PORT]`` (with an optional ``user:password@``, sent as HTTP Basic
    auth by :class:`TritonBackend`) → (protocol, "HOST:PORT"); ValueError otherwise. Errors show the URL redacted."""
    bare, _, _ = split_credentials(url.strip())
    parts = urlsplit(bare)
    if parts.scheme not in SCHEMES or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ValueError(f"--server {redact(url)!r}: expected grpc://HOST:PORT (default port 8001) or "
                         "http://HOST:PORT (default 8000)")
    try:
        port = parts.port or SCHEMES[parts.scheme]
    except ValueError:
        raise ValueError(f"--server {redact(url)!r}: the port is not a number") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return parts.scheme, f"{host}:{port}"


def _import_client(protocol: str):
    try:
        if protocol == "grpc":
            import tritonclient.grpc as client
        else:
            import tritonclient.http as client
        from tritonclient.utils import InferenceServerException
    except ImportError as e:
        raise ImportError(f"the triton backend needs tritonclient ({e}): pip install 'm2s2l-edge[serve]'") from None
    return client, InferenceServerException


class TritonBackend:
    """A served M²S²L. Shapes as every backend: clips (B, T, 3, H, W) float32 in [-1, 1] → frame_pred, motion_pred
    (B, 3, H, W) float32; B larger than the model's max_batch_size is sent in several requests."""

    name = "triton"

    def __init__(
        self,
        server: str,
        *,
        model: str,
        timeout: float = 60.0,
        retries: int = 3,
        retry_wait: float = 1.0,
        run_retries: int | None = None,
        version: str = "",
    ) -> None:
        if not model:
            raise ValueError("the triton backend needs the model's name on the server (--model NAME)")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 s, got {timeout}")
        if retries < 0 or (run_retries is not None and run_retries < 0):
            raise ValueError(f"retries must be >= 0, got {retries if retries < 0 else run_retries}")
        # ``server`` is what the user gave; everything printed, logged or stored shows ``self.server``, redacted.
        self.server, self.model, self.version = redact(server), model, version
        self.protocol, self.address = parse_server_url(server)
        _, user, password = split_credentials(server.strip())
        self._headers = {}
        if user is not None:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
        self.timeout, self.retries, self.retry_wait = float(timeout), int(retries), float(retry_wait)
        self.run_retries = self.retries if run_retries is None else int(run_retries)
        self._client_module, self._error = _import_client(self.protocol)
        self._local = threading.local()
        self.reconnects = 0
        self._config = self._call_with_retries(self._read_config, "read the model configuration")
        self._params = {k: v.get("string_value", "") for k, v in self._config.get("parameters", {}).items()}
        if PARAM_METADATA not in self._params:
            raise ValueError(f"model {model!r} on {server} carries no m2s2l-edge metadata (parameter "
                             f"{PARAM_METADATA!r}); serve a repository written by `m2s2l-edge serve triton-repo`")
        try:
            self._meta = json.loads(self._params[PARAM_METADATA])
            self._calibration = (json.loads(self._params[PARAM_CALIBRATION])
                                 if self._params.get(PARAM_CALIBRATION) else None)
        except json.JSONDecodeError as e:
            raise ValueError(f"model {model!r} on {server}: unreadable m2s2l-edge metadata ({e})") from None
        self.max_batch = int(self._config.get("max_batch_size", 0))
        (self._input,) = self._config["input"]
        self._outputs = [o["name"] for o in self._config["output"]]

    # --- connection ---------------------------------------------------------------------------------------------

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "grpc":
                client = self._client_module.InferenceServerClient(self.address)
            else:
                client = self._client_module.InferenceServerClient(
                    self.address, ssl=self.protocol == "https", connection_timeout=self.timeout,
                    network_timeout=self.timeout)
            self._local.client = client
        return client

    def _drop_client(self) -> None:
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            try:
                client.close()
            except (self._error, OSError, RuntimeError):  # closing a dead connection may fail; it is gone anyway
                pass

    def _unreachable(self, e: BaseException) -> bool:
        """Whether ``e`` means the server could not be reached (worth a reconnect), not that it refused a request."""
        if not isinstance(e, self._error):
            return isinstance(e, (OSError, ConnectionError))
        text = f"{e.status() or ''} {e.message() or ''}".lower()
        return any(s in text for s in ("unavailable", "connect", "deadline", "timed out", "timeout", "reset",
                                       "broken pipe", "socket closed", "eof"))

    def _call_with_retries(self, fn, what: str, retries: int | None = None):
        retries = self.retries if retries is None else retries
        attempts = retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return fn(self._client())
            except (self._error, OSError) as e:
                if not self._unreachable(e):
                    raise self._refused(e, what) from None
                self._drop_client()
                if attempt == attempts:
                    raise RuntimeError(f"Triton server {self.server} is unreachable (could not {what} after "
                                       f"{attempts} attempt(s): {self._brief(e)})") from None
                self.reconnects += 1
                logger.warning("Triton server %s: %s; reconnecting (%d/%d)", self.server, self._brief(e), attempt,
                               retries)
                time.sleep(self.retry_wait)
        raise AssertionError("unreachable")

    @staticmethod
    def _brief(e: BaseException) -> str:
        text = e.message() if hasattr(e, "message") and callable(e.message) else str(e)
        return redact_text(" ".join(str(text).split()))[:200]

    def _refused(self, e: BaseException, what: str) -> Exception:
        text = self._brief(e)
        if "unknown model" in text.lower() or "not found" in text.lower() or "is not ready" in text.lower():
            return ValueError(f"Triton server {self.server} has no ready model {self.model!r} ({text})")
        return RuntimeError(f"Triton server {self.server} refused to {what} for model {self.model!r}: {text}")

    def _timeout(self) -> dict:
        """Keyword arguments of every call: gRPC takes a deadline per call (the HTTP client got its timeouts when it
        was made); the credentials of the URL go as a header."""
        extra = {"headers": dict(self._headers)} if self._headers else {}
        return {"client_timeout": self.timeout, **extra} if self.protocol == "grpc" else extra

    def _read_config(self, client) -> dict:
        if not client.is_server_live(**self._timeout()):
            raise RuntimeError(f"Triton server {self.server} is not live")
        if not client.is_model_ready(self.model, self.version, **self._timeout()):
            names = self._model_names(client)
            raise ValueError(f"Triton server {self.server} has no ready model {self.model!r} (ready: "
                             f"{', '.join(names) or 'none'})")
        config = client.get_model_config(self.model, self.version, **self._timeout(),
                                         **({"as_json": True} if self.protocol == "grpc" else {}))
        return config["config"] if self.protocol == "grpc" else config

    def _model_names(self, client) -> list[str]:
        if self.protocol == "grpc":
            index = client.get_model_repository_index(as_json=True, **self._timeout()).get("models", [])
        else:
            index = client.get_model_repository_index(**self._timeout())
        return sorted(m["name"] for m in index if m.get("state") == "READY")

    # --- Backend protocol ---------------------------------------------------------------------------------------

    def _spec(self, entry: dict) -> TensorSpec:
        dims = tuple(int(d) for d in entry["dims"])
        shape = ("batch", *dims) if self.max_batch > 0 else dims
        dtype = {"TYPE_FP32": "float32", "TYPE_FP16": "float16"}.get(entry.get("data_type", "TYPE_FP32"), "float32")
        return TensorSpec(entry["name"], shape, dtype)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (self._spec(self._input),)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return tuple(self._spec(o) for o in self._config["output"])

    @property
    def metadata(self) -> dict:
        return {**self._meta, "calibration": self._calibration, "server": self.server, "served_model": self.model,
                "max_batch_size": self.max_batch}

    @property
    def calibration(self) -> dict | None:
        return self._calibration

    def _infer(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        module = self._client_module

        def call(client):
            tensor = module.InferInput(self._input["name"], list(clips.shape), "FP32")
            tensor.set_data_from_numpy(clips)
            outputs = [module.InferRequestedOutput(n) for n in self._outputs]
            return client.infer(self.model, [tensor], model_version=self.version, outputs=outputs, **self._timeout())

        result = self._call_with_retries(call, "run a batch", self.run_retries)
        return {n: np.asarray(result.as_numpy(n), dtype=np.float32) for n in self._outputs}

    def run(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        clips = check_clips(clips, self.inputs[0].shape)
        if self.max_batch <= 0:  # a fixed-shape model: its batch is part of the dims
            return self._infer(clips)
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, clips.shape[0], self.max_batch):
            for name, value in self._infer(clips[start:start + self.max_batch]).items():
                parts.setdefault(name, []).append(value)
        return {name: np.concatenate(values, axis=0) for name, values in parts.items()}

    def statistics(self) -> dict:
        """The server's inference statistics of this model: ``inference_count`` (clips run) and ``execution_count``
        (model executions; fewer than the clips when dynamic batching merged requests), and the rest as served."""
        def call(client):
            extra = {"as_json": True} if self.protocol == "grpc" else {}
            stats = client.get_inference_statistics(self.model, self.version, **self._timeout(), **extra)
            model = dict(stats["model_stats"][0])
            # gRPC's JSON spells 64-bit counts as strings and leaves out zeros; both protocols give ints here.
            for key in ("inference_count", "execution_count"):
                model[key] = int(model.get(key, 0))
            return model

        return self._call_with_retries(call, "read statistics")

    def close(self) -> None:
        self._drop_client()
