"""The lmscope/* requests as one table of plain handlers (`HANDLERS`).

Each handler takes the server and the request's params, already validated against the method's
schema and with the schema's defaults filled in (`protocol.with_defaults`), calls the session or
a `Trace`, and returns a schema-shaped dict. How a request runs is the table's business
(`app.register_requests`), so that reading messages, status, cancel and hover never wait on model
work:
- LOOP: answered on the event loop at once (cheap, never touches the model: status);
- QUERY: on pygls' thread pool; never waits for the model (a card answers from what it has);
- LIVE: may re-run the model for what a trace does not store, so it may wait for the model's
  lock behind a trace: it runs on the server's own `live_queries` threads, awaited from the loop,
  and so never occupies the threads hovers run on;
- JOB: a coroutine on the loop that submits model work to the session's worker and awaits it.
Errors become JSON-RPC errors there too, so no handler catches anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmscope import protocol
from lmscope.__about__ import __version__
from lmscope.components import ComponentRef
from lmscope.errors import LmscopeError, ModelLoadError
from lmscope.graph import RAW
from lmscope.server.app import LmscopeServer, Progress, queued_traces, run_job
from lmscope.server.documents import prompt_of
from lmscope.server.runs import run, set_active_run, shelf_of
from lmscope.server.wire import finite, model_wire, node_wire, summary_wire
from lmscope.session import JobCancelled

LOOP = "loop"  # on the event loop, at once
QUERY = "query"  # on pygls' thread pool; never waits for the model
LIVE = "live"  # on the server's live-query threads; may wait for the model
JOB = "job"  # a coroutine on the loop that awaits model work

Params = dict[str, Any]

# The most edges one lmscope/route answer carries (~200 bytes of JSON each): a real trace's
# route at τ ≥ 0.01 has tens of thousands; a hostile file's would take seconds and hundreds of MB.
MAX_ROUTE_EDGES = 1_000_000


@dataclass(frozen=True)
class Handler:
    run: Callable[[LmscopeServer, Params], Any]
    kind: str  # LOOP | QUERY | LIVE | JOB


def _renormalize(params: Params) -> bool:
    return params["mode"] != RAW


# --- status and model ------------------------------------------------------------------------
def status(server: LmscopeServer, _params: Params) -> dict[str, Any]:
    session = server.session
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


async def load_model(server: LmscopeServer, params: Params) -> dict[str, Any]:
    job = server.session.load_model_job(
        params["spec"],
        params.get("dtype"),
        params["device"],
        on_state=lambda message: server.notify_model(message=message),
        device_map=params.get("deviceMap"),
        adapter=params.get("adapter"),
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


# --- traces ----------------------------------------------------------------------------------
async def trace(server: LmscopeServer, params: Params) -> dict[str, Any]:
    from lmscope.tracing.engine import TraceOptions

    session = server.session
    request_id = server.protocol.msg_id  # read before the first await: it is this request's
    prompt, folder = prompt_of(server, params)
    options = TraceOptions(
        prepend_bos=params["prependBos"],
        min_threshold=params["minThreshold"],
        detail=params["detail"],
        generate=params["generate"],
        seed=params.get("seed"),
    )
    save = params.get("savePath")
    save_path = Path(save) if save else None
    if save_path is not None and not save_path.is_absolute():
        raise LmscopeError(f"savePath must be an absolute path, got {save!r}")
    # The prompt and the save path are checked first (trace_job): they cost nothing.
    job = session.trace_job(prompt, options, save_path, folder)
    if session.model is None and not session.model_pending:
        raise ModelLoadError("no model is loaded: call lmscope/loadModel first")
    # A model still loading is fine: the trace queues behind the load, in order.
    token = params.get("workDoneToken")
    reporter = Progress(server, token, "Tracing")
    job.progress = reporter
    job.on_start = lambda: server.notify_trace("started", requestId=request_id)
    if token is not None:
        # The client's Cancel button on the progress notification cancels the trace too.
        progress_cancel = server.work_done_progress.tokens.setdefault(token, Future())

        def on_progress_cancel(done: Future) -> None:
            if done.cancelled():
                session.cancel(job)

        progress_cancel.add_done_callback(on_progress_cancel)
    server.notify_trace("queued", requestId=request_id)
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
    server.notify_trace("finished", requestId=request_id, handle=handle)
    traced = session.traces.get(handle)
    return {"trace": summary_wire(handle, traced, save_path), "saved": saved}


def open_trace(server: LmscopeServer, params: Params) -> dict[str, Any]:
    path = Path(params["path"])
    handle = server.session.open_trace(path)
    return {"trace": summary_wire(handle, server.session.traces.get(handle), path)}


def close_trace(server: LmscopeServer, params: Params) -> dict[str, Any]:
    return {"closed": server.session.traces.close(params["handle"])}


def save_trace(server: LmscopeServer, params: Params) -> dict[str, Any]:
    path = server.session.save_trace(params["handle"], Path(params["path"]))
    return {"path": str(path)}


# --- queries on a trace ----------------------------------------------------------------------
def route(server: LmscopeServer, params: Params) -> dict[str, Any]:
    traced = server.session.traces.get(params["handle"])
    found = traced.route(
        params["token"], params["threshold"], _renormalize(params), max_edges=MAX_ROUTE_EDGES
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


def diff(server: LmscopeServer, params: Params) -> dict[str, Any]:
    """Two traces compared from what they store (`traces.diff`): never touches the model."""
    traces = server.session.traces
    pairs = params.get("pairs")
    found = traces.get(params["handleA"]).diff(
        traces.get(params["handleB"]),
        token_a=params["tokenA"],
        token_b=params["tokenB"],
        threshold=params["threshold"],
        renormalize=_renormalize(params),
        align_last=params.get("alignLast"),
        pairs=None if pairs is None else [tuple(p) for p in pairs],
        max_edges=MAX_ROUTE_EDGES,
    )
    return found.wire()


def edge_heads(server: LmscopeServer, params: Params) -> dict[str, Any]:
    traced = server.session.traces.get(params["handle"])
    return {"heads": traced.edge_heads(params["layer"], params["target"], params["source"])}


def ffn_neurons(server: LmscopeServer, params: Params) -> dict[str, Any]:
    traced = server.session.traces.get(params["handle"])
    return traced.ffn_neurons(
        params["layer"], params["position"], params["offset"], params["limit"]
    )


def ffn_experts(server: LmscopeServer, params: Params) -> dict[str, Any]:
    traced = server.session.traces.get(params["handle"])
    return traced.ffn_experts(params["layer"], params["position"])


def projection(server: LmscopeServer, params: Params) -> dict[str, Any]:
    traced = server.session.traces.get(params["handle"])
    node = params["node"]
    where = (node["kind"], node["layer"], node["position"])
    result = traced.projection(where, params["kind"])
    ids = traced.projection_ids(where, params["kind"])
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


def component(server: LmscopeServer, params: Params) -> dict[str, Any]:
    from lmscope.cards import component_card

    session = server.session
    handle = params.get("handle")
    traced = session.traces.get(handle) if handle else None
    live, notes = session.live_for(traced)
    return component_card(
        ComponentRef.from_wire(params["component"]),
        traced,
        token=params["token"],
        threshold=params["threshold"],
        renormalize=_renormalize(params),
        live=live,
        handle=handle,
        notes=notes,
        run=shelf_of(server).cited(),
    )


def head_maps(server: LmscopeServer, params: Params) -> dict[str, Any]:
    traced = server.session.traces.get(params["handle"])
    layer, head = params["layer"], params["head"]
    position = traced.position(params["position"])
    attention = traced.attention_pattern(layer, head)  # [n, n], NeedsModel when saved
    contribution = traced.contribution_map(layer, head)  # [n, n]
    promoted, suppressed = traced.head_tokens(layer, head, position)
    return {
        "layer": layer,
        "head": head,
        "position": position,
        # Causal: row i holds sources 0..i. Clipped into [0, 1] against float rounding.
        "attention": [
            [min(1.0, max(0.0, float(a))) for a in row[: i + 1]] for i, row in enumerate(attention)
        ],
        "contribution": [
            [finite(float(c)) for c in row[: i + 1]] for i, row in enumerate(contribution)
        ],
        "promoted": promoted,
        "suppressed": suppressed,
    }


# --- causal checks (lmscope.causal): model work, queued like a trace, with progress and cancel ---
async def _causal(server: LmscopeServer, params: Params, title: str, run: Callable) -> Any:
    job = server.session.causal_job(params["handle"], title.lower(), run)
    reporter = Progress(server, params.get("workDoneToken"), title)
    job.progress = reporter
    token = params.get("workDoneToken")
    if token is not None:  # the Cancel button of the progress notification cancels the job
        cancel = server.work_done_progress.tokens.setdefault(token, Future())

        def on_progress_cancel(done: Future) -> None:
            if done.cancelled():
                server.session.cancel(job)

        cancel.add_done_callback(on_progress_cancel)
    try:
        result = await run_job(server, job)
    except BaseException:
        reporter.end("stopped")
        raise
    reporter.end("done")
    return result.to_wire()


async def ablate(server: LmscopeServer, params: Params) -> dict[str, Any]:
    def run(traced: Any, job: Any) -> Any:
        job.report("ablated forward pass", None)
        return traced.ablate(
            params["targets"],
            params["kind"],
            token=params["token"],
            patch=params.get("patchPrompt"),
            should_cancel=job.cancel.is_set,
        )

    return await _causal(server, params, "Ablating", run)


async def verify_route(server: LmscopeServer, params: Params) -> dict[str, Any]:
    def run(traced: Any, job: Any) -> Any:
        return traced.verify_route(
            params["threshold"],
            params["kind"],
            token=params["token"],
            renormalize=_renormalize(params),
            n_random=params["randomSets"],
            seed=params["seed"],
            should_cancel=job.cancel.is_set,
            progress=job.report,
        )

    return await _causal(server, params, "Verifying route", run)


HANDLERS: dict[str, Handler] = {
    "lmscope/status": Handler(status, LOOP),
    "lmscope/loadModel": Handler(load_model, JOB),
    "lmscope/trace": Handler(trace, JOB),
    "lmscope/openTrace": Handler(open_trace, QUERY),
    "lmscope/closeTrace": Handler(close_trace, LOOP),
    "lmscope/saveTrace": Handler(save_trace, QUERY),
    "lmscope/route": Handler(route, QUERY),
    "lmscope/diff": Handler(diff, QUERY),
    "lmscope/edgeHeads": Handler(edge_heads, LIVE),
    "lmscope/ablate": Handler(ablate, JOB),
    "lmscope/verifyRoute": Handler(verify_route, JOB),
    "lmscope/ffnNeurons": Handler(ffn_neurons, LIVE),
    "lmscope/ffnExperts": Handler(ffn_experts, LIVE),
    "lmscope/projection": Handler(projection, LIVE),
    "lmscope/component": Handler(component, QUERY),
    "lmscope/headMaps": Handler(head_maps, LIVE),
    # Corpus runs (server/runs.py): read from the run's tables, never the model.
    "lmscope/run": Handler(run, QUERY),
    "lmscope/setActiveRun": Handler(set_active_run, QUERY),
}
"""Every client->server request of protocol/methods.json, and how it runs."""
