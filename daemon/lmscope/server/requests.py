"""The lmscope/* request handlers: validate, call the session or a Trace, answer wire dicts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from lmscope import protocol
from lmscope.__about__ import __version__
from lmscope.errors import (
    LmscopeError,
    ModelLoadError,
)
from lmscope.server.app import (
    LmscopeServer,
    Progress,
    lmscope_request,
    path_of_uri,
    queued_traces,
    run_job,
    threshold_mode,
    trace_folder,
    validated_params,
)
from lmscope.server.editor import position, text_between
from lmscope.server.rpc import rpc_error
from lmscope.server.wire import finite, model_wire, node_wire, summary_wire
from lmscope.session import Job, JobCancelled

log = logging.getLogger("lmscope.server")


MAX_DOCUMENT_BYTES = 16 * 2**20


def read_document(path: Path, uri: str) -> str:
    """A document the editor has not opened, read from disk: UTF-8 text of a sane size."""
    try:
        if path.stat().st_size > MAX_DOCUMENT_BYTES:
            raise LmscopeError(
                f"document {uri} is over {MAX_DOCUMENT_BYTES >> 20} MiB: not a prompt"
            )
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LmscopeError(f"document {uri} is not UTF-8 text") from None
    except (OSError, ValueError) as exc:
        raise LmscopeError(f"cannot read document {uri}: {exc}") from None


def register_requests(server: LmscopeServer) -> None:
    """Register every lmscope/* request on `server`."""
    session = server.session

    def request(method: str, *, threaded: bool = True):
        return lmscope_request(server, method, threaded=threaded)

    # --- status and model ----------------------------------------------------------------------
    @request("lmscope/status")
    def status(_params: dict[str, Any]) -> dict[str, Any]:
        cache = session.traces
        return {
            "version": __version__,
            "protocolVersion": protocol.PROTOCOL_VERSION,
            "state": session.state,
            "model": model_wire(session.model) if session.model is not None else None,
            "queuedTraces": queued_traces(session),
            "traceCache": {
                "count": cache.count,
                "bytes": cache.bytes,
                "maxCount": cache.max_count,
                "maxBytes": cache.max_bytes,
            },
        }

    @server.feature("lmscope/loadModel")
    async def load_model(raw: Any) -> dict[str, Any]:
        server.loop = asyncio.get_running_loop()
        try:
            params = validated_params("lmscope/loadModel", raw)
            job = session.load_model_job(
                params["spec"],
                params.get("dtype"),
                params.get("device", "cpu"),
                on_state=lambda: server.notify_model(),
                device_map=params.get("deviceMap"),
            )
            reporter = Progress(server, params.get("workDoneToken"), "Loading model")

            def progress(message: str, fraction: float | None) -> None:
                reporter(message, fraction)
                pct = None if fraction is None else int(100 * fraction)
                server.notify_model(percentage=pct, message=message)

            job.progress = progress
            loaded = await run_job(server, job)
            reporter.end("model ready")
            return {"model": model_wire(loaded)}
        except BaseException as exc:
            raise rpc_error(exc) from None

    # --- traces --------------------------------------------------------------------------------
    def prompt_of(params: dict[str, Any]) -> tuple[str, str | None]:
        """The prompt text, and the folder it came from (document traces)."""
        if "prompt" in params:
            return params["prompt"], None
        document = params["document"]
        uri, span = document["uri"], document["range"]
        start: Any
        end: Any
        try:
            # Only documents open in the editor: pygls would read any other file whole.
            if unquote(uri) not in server.workspace.text_documents:
                raise KeyError(uri)
            doc = server.workspace.get_text_document(uri)
            lines: Sequence[str] = doc.lines
            start = doc.position_codec.position_from_client_units(lines, position(span["start"]))
            end = doc.position_codec.position_from_client_units(lines, position(span["end"]))
        except Exception:
            path = path_of_uri(uri)
            if path is None or not path.is_file():
                raise LmscopeError(f"document {uri} is not open and not a readable file") from None
            lines = read_document(path, uri).splitlines(keepends=True)
            start, end = position(span["start"]), position(span["end"])
        text = text_between(lines, start, end)
        path = path_of_uri(uri)
        return text, None if path is None else str(path.parent)

    @server.feature("lmscope/trace")
    async def trace(raw: Any) -> dict[str, Any]:
        from lmscope.tracing.engine import TraceOptions

        server.loop = asyncio.get_running_loop()
        request_id = server.protocol.msg_id
        try:
            params = validated_params("lmscope/trace", raw)
            prompt, folder = prompt_of(params)
            options = TraceOptions(
                prepend_bos=params.get("prependBos", True),
                min_threshold=params.get("minThreshold", 0.01),
                detail=params.get("detail", "route"),
            )
            save = params.get("savePath")
            save_path = Path(save) if save else None
            if save_path is not None and not save_path.is_absolute():
                raise LmscopeError(f"savePath must be an absolute path, got {save!r}")
            if session.model is None and not session.model_pending:
                raise ModelLoadError("no model is loaded: call lmscope/loadModel first")
            # A model still loading is fine: the trace queues behind the load, in order.
            job = session.trace_job(prompt, options, save_path)
            token = params.get("workDoneToken")
            reporter = Progress(server, token, "Tracing")
            job.progress = reporter
            if token is not None:
                # The client's Cancel button on the progress notification cancels the trace too.
                progress_cancel = server.work_done_progress.tokens.setdefault(token, Future())

                def on_progress_cancel(done: Future) -> None:
                    if done.cancelled():
                        session.cancel(job)

                progress_cancel.add_done_callback(on_progress_cancel)
            server.notify_trace("queued", requestId=request_id)
            job_started = job.run

            def run_and_announce(j: Job) -> Any:
                server.notify_trace("started", requestId=request_id)
                return job_started(j)

            job.run = run_and_announce
            try:
                handle, saved = await run_job(server, job)
            except BaseException as exc:
                cancelled = isinstance(exc, (JobCancelled, asyncio.CancelledError))
                server.notify_trace(
                    "cancelled" if cancelled else "failed",
                    requestId=request_id,
                    message=str(exc)[:300] or type(exc).__name__,
                )
                reporter.end("cancelled" if cancelled else "failed")
                raise
            reporter.end("done")
            if save_path is not None:
                folder = str(trace_folder(save_path))
            if folder is not None:
                server.latest_by_folder[folder] = handle
            server.latest_by_folder[""] = handle
            server.notify_trace("finished", requestId=request_id, handle=handle)
            trace_obj = session.traces.get(handle)
            return {"trace": summary_wire(handle, trace_obj, save_path), "saved": saved}
        except BaseException as exc:
            raise rpc_error(exc) from None

    @request("lmscope/openTrace")
    def open_trace(params: dict[str, Any]) -> dict[str, Any]:
        path = Path(params["path"])
        handle = session.open_trace(path)
        server.latest_by_folder[str(trace_folder(path))] = handle
        return {"trace": summary_wire(handle, session.traces.get(handle), path)}

    @request("lmscope/closeTrace")
    def close_trace(params: dict[str, Any]) -> dict[str, Any]:
        return {"closed": session.traces.close(params["handle"])}

    @request("lmscope/saveTrace")
    def save_trace(params: dict[str, Any]) -> dict[str, Any]:
        path = session.save_trace(params["handle"], Path(params["path"]))
        server.latest_by_folder[str(trace_folder(path))] = params["handle"]
        return {"path": str(path)}

    @request("lmscope/route")
    def route(params: dict[str, Any]) -> dict[str, Any]:
        trace_obj = session.traces.get(params["handle"])
        found = trace_obj.route(
            params.get("token", -1), params["threshold"], threshold_mode(params)
        )
        share = found.flow()
        return {
            "token": found.token,
            "threshold": found.threshold,
            "mode": found.mode,
            "nodes": [
                {"id": node_wire(node), "share": finite(share.get(node, 0.0))}
                for node in sorted(found.nodes)
            ],
            "edges": [
                {
                    "kind": edge.kind,
                    "source": node_wire(edge.source),
                    "target": node_wire(edge.target),
                    "weight": edge.weight,
                    "heads": list(edge.heads),
                }
                for edge in found.edges
            ],
        }

    @request("lmscope/edgeHeads")
    def edge_heads(params: dict[str, Any]) -> dict[str, Any]:
        trace_obj = session.traces.get(params["handle"])
        heads = trace_obj.edge_heads(params["layer"], params["target"], params["source"])
        return {"heads": heads}

    @request("lmscope/ffnNeurons")
    def ffn_neurons(params: dict[str, Any]) -> dict[str, Any]:
        trace_obj = session.traces.get(params["handle"])
        return trace_obj.ffn_neurons(
            params["layer"], params["position"], params.get("offset", 0), params.get("limit", 50)
        )

    @request("lmscope/projection")
    def projection(params: dict[str, Any]) -> dict[str, Any]:
        trace_obj = session.traces.get(params["handle"])
        node = params["node"]
        kind = params.get("kind", "lens")
        result = trace_obj.projection((node["kind"], node["layer"], node["position"]), kind)
        ids = trace_obj.projection_ids((node["kind"], node["layer"], node["position"]), kind)
        return {
            "top": [
                {"token": token, "id": i, "logit": logit, "prevRank": rank}
                for (token, logit, rank), i in zip(result["top"], ids["top"])
            ],
            "bottom": [
                {"token": token, "id": i, "logit": logit}
                for (token, logit), i in zip(result["bottom"], ids["bottom"])
            ],
        }

    @request("lmscope/component")
    def component(params: dict[str, Any]) -> dict[str, Any]:
        from lmscope.cards import component_card
        from lmscope.components import ComponentRef

        ref = ComponentRef.from_wire(params["component"])
        handle = params.get("handle")
        trace_obj = session.traces.get(handle) if handle else None
        card = component_card(
            ref,
            trace_obj,
            token=params.get("token", -1),
            threshold=params.get("threshold", 0.04),
            renormalize=threshold_mode(params),
            model=session.model,
            handle=handle,
        )
        return card

    @request("lmscope/headMaps")
    def head_maps(params: dict[str, Any]) -> dict[str, Any]:
        from lmscope.cards import head_tokens

        trace_obj = session.traces.get(params["handle"])
        layer, head = params["layer"], params["head"]
        position = trace_obj.position(params.get("position", -1))
        attention = trace_obj.attention_pattern(layer, head)  # [n, n], NeedsModel when saved
        contribution = trace_obj.contribution_map(layer, head)  # [n, n]
        promoted, suppressed = head_tokens(trace_obj, layer, head, position)
        return {
            "layer": layer,
            "head": head,
            "position": position,
            # Causal: row i holds sources 0..i. Clipped into [0, 1] against float rounding.
            "attention": [
                [min(1.0, max(0.0, float(a))) for a in row[: i + 1]]
                for i, row in enumerate(attention)
            ],
            "contribution": [
                [finite(float(c)) for c in row[: i + 1]] for i, row in enumerate(contribution)
            ],
            "promoted": promoted,
            "suppressed": suppressed,
        }
