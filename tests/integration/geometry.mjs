// Real element geometry inside the flow-graph webview, for vscode.test.mjs: getBoundingClientRect
// in the webview's own document (client coordinates of its frame), measured in one evaluate().
// The selectors are the webview's DOM contract (extension/webview):
//   .canvas                          the graph area, holding svg.graph
//   svg.graph .node[data-node]       route nodes ("R22.2")
//   svg.graph path.edge[data-edge]   edges, with class attention, ffn or residual
// (scoped to svg.graph and its data attributes: the legend's swatches carry the same classes)
//   .column-labels .column-label     pinned token labels; .row-labels .row-label row labels
//   .details                         the details panel (visible when open)
//   button.zoom-out, button.zoom-in, button.fit, button.export, .legend   the toolbar

export const SELECTORS = {
  canvas: ".canvas",
  graph: ".canvas svg.graph",
  nodes: "svg.graph .node[data-node]",
  edges: "svg.graph path.edge[data-edge]",
  attentionEdges: "svg.graph path.edge.attention[data-edge]",
  columnLabels: ".column-labels .column-label",
  rowLabels: ".row-labels .row-label",
  details: ".details",
  zoomOut: "button.zoom-out",
  zoomIn: "button.zoom-in",
  fit: "button.fit",
  export: "button.export",
  legend: ".legend",
};

/**
 * Runs in the webview's document: for each named selector, every matching element with its box
 * and whether it is visible. `box` is what the eye sees: the element's rect clipped by every
 * ancestor that clips (overflow other than visible); for `ink` selectors (labels) the text's own
 * box (a Range over it) clipped to the element when the element clips, or the element's box when
 * it paints a background or border. Invisible: display none, visibility hidden, opacity 0, or
 * nothing left after clipping.
 */
function collectInFrame(_root, { selectors, ink, mark }) {
  const plain = (r) => ({ left: r.left, top: r.top, right: r.right, bottom: r.bottom });
  const intersect = (a, b) => ({
    left: Math.max(a.left, b.left),
    top: Math.max(a.top, b.top),
    right: Math.min(a.right, b.right),
    bottom: Math.min(a.bottom, b.bottom),
  });
  const empty = (r) => r.right - r.left <= 0 || r.bottom - r.top <= 0;
  const clips = (el) => {
    const cs = getComputedStyle(el);
    return cs.overflowX !== "visible" || cs.overflowY !== "visible";
  };
  const paints = (el) => {
    const cs = getComputedStyle(el);
    const bg = cs.backgroundColor;
    return (
      (bg && bg !== "transparent" && !/rgba\(.*,\s*0\)$/.test(bg)) ||
      parseFloat(cs.borderTopWidth) + parseFloat(cs.borderLeftWidth) > 0
    );
  };
  const viewportRect = { left: 0, top: 0, right: innerWidth, bottom: innerHeight };
  const describe = (el, useInk) => {
    const own = plain(el.getBoundingClientRect());
    let box = own;
    if (useInk && !paints(el)) {
      const range = document.createRange();
      range.selectNodeContents(el);
      const text = plain(range.getBoundingClientRect());
      if (!empty(text)) box = clips(el) ? intersect(text, own) : text;
    }
    let visible =
      el.isConnected &&
      el.checkVisibility({ opacityProperty: true, visibilityProperty: true }) &&
      !el.closest("[hidden]");
    for (let a = el.parentElement; a && visible; a = a.parentElement) {
      if (a !== document.documentElement && a !== document.body && clips(a))
        box = intersect(box, plain(a.getBoundingClientRect()));
    }
    box = intersect(box, viewportRect);
    if (empty(box)) visible = false;
    return {
      rect: own,
      box,
      visible,
      text: (el.textContent ?? "").trim().slice(0, 40),
      id: el.getAttribute("data-node") ?? el.getAttribute("data-edge") ?? null,
      classes: el.getAttribute("class") ?? "",
      marked: mark ? el.hasAttribute(mark) : false,
    };
  };
  const out = {};
  for (const [name, selector] of Object.entries(selectors)) {
    out[name] = [...document.querySelectorAll(selector)].map((el) =>
      describe(el, ink.includes(name)),
    );
  }
  out.window = { width: innerWidth, height: innerHeight, bodyWidth: document.body.clientWidth };
  return out;
}

/** One measurement of the webview: { [name]: [{rect, box, visible, text, id, classes}] }. */
export function collect(
  frame,
  selectors = SELECTORS,
  { ink = ["columnLabels", "rowLabels"], mark = null } = {},
) {
  return frame.locator(":root").evaluate(collectInFrame, { selectors, ink, mark });
}

/** Names of `names` whose selector matches nothing, as "name (selector)". */
export function missing(snapshot, names, selectors = SELECTORS) {
  return names.filter((n) => !snapshot[n]?.length).map((n) => `${selectors[n]}`);
}

export const fmtRect = (r) =>
  `[${r.left.toFixed(1)},${r.top.toFixed(1)} → ${r.right.toFixed(1)},${r.bottom.toFixed(1)}]`;

/** Is `inner` inside `outer`, allowing `tol` px? */
export function inside(inner, outer, tol = 0.5) {
  return (
    inner.left >= outer.left - tol &&
    inner.top >= outer.top - tol &&
    inner.right <= outer.right + tol &&
    inner.bottom <= outer.bottom + tol
  );
}

export function centre(r) {
  return { x: (r.left + r.right) / 2, y: (r.top + r.bottom) / 2 };
}

export function containsPoint(r, p) {
  return p.x >= r.left && p.x <= r.right && p.y >= r.top && p.y <= r.bottom;
}

/** The overlap of two rects in px along x and y (both > tol: they overlap). */
export function overlap(a, b) {
  return {
    x: Math.min(a.right, b.right) - Math.max(a.left, b.left),
    y: Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top),
  };
}

/** Pairs of items whose boxes overlap by more than `tol` px in both directions. */
export function overlappingPairs(items, tol = 1) {
  const pairs = [];
  for (let i = 0; i < items.length; i++) {
    for (let j = i + 1; j < items.length; j++) {
      const o = overlap(items[i].box, items[j].box);
      if (o.x > tol && o.y > tol) pairs.push([items[i], items[j], o]);
    }
  }
  return pairs;
}

/** Wait until two measurements `gapMs` apart agree (an animated fit or pan has settled). */
export async function settled(measure, { gapMs = 150, deadlineMs = 5_000 } = {}) {
  const end = Date.now() + deadlineMs;
  let last = JSON.stringify(await measure());
  for (;;) {
    await new Promise((r) => setTimeout(r, gapMs));
    const now = await measure();
    const text = JSON.stringify(now);
    if (text === last || Date.now() > end) return now;
    last = text;
  }
}

/** The attribute the geometry test marks the edge it clicks with. */
export const CLICK_MARK = "data-geometry-clicked";

/**
 * Runs in the webview's document: among visible edges matching `selector`, the ones with a point
 * on the path where a click lands on the path itself (document.elementFromPoint), and of those
 * the one nearest the bottom-right corner (where a details panel opening on the right or at the
 * bottom would cover it). Marks it with `mark`; returns that point (client coordinates of the
 * frame) and what identifies the edge after a re-render (its data-edge key, its d).
 */
function pickEdgeInFrame(_root, { selector, mark }) {
  const candidates = [];
  let shown = 0;
  for (const path of document.querySelectorAll(selector)) {
    path.removeAttribute(mark);
    if (!path.checkVisibility({ opacityProperty: true, visibilityProperty: true })) continue;
    const length = path.getTotalLength();
    const m = path.getScreenCTM();
    if (!m || !length) continue;
    shown++;
    for (const f of [0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8]) {
      const p = path.getPointAtLength(length * f).matrixTransform(m);
      if (p.x < 0 || p.y < 0 || p.x > innerWidth || p.y > innerHeight) continue;
      if (document.elementFromPoint(p.x, p.y) === path) {
        candidates.push({ path, x: p.x, y: p.y });
        break;
      }
    }
  }
  if (!candidates.length) return { shown, clickable: 0 };
  candidates.sort((a, b) => b.x + b.y - (a.x + a.y));
  const { path, x, y } = candidates[0];
  path.setAttribute(mark, "");
  return {
    shown,
    clickable: candidates.length,
    x,
    y,
    key: path.getAttribute("data-edge"),
    d: path.getAttribute("d"),
  };
}

export function pickEdge(frame, selector = SELECTORS.attentionEdges) {
  return frame.locator(":root").evaluate(pickEdgeInFrame, { selector, mark: CLICK_MARK });
}

/** Selectors that find the clicked edge again, best first (a re-render drops the mark). */
export function clickedEdgeSelectors(picked) {
  const q = (s) => `"${String(s).replace(/["\\]/g, "\\$&")}"`;
  return [
    `svg.graph path.edge[${CLICK_MARK}]`,
    ...(picked.key ? [`svg.graph path.edge[data-edge=${q(picked.key)}]`] : []),
    ...(picked.d ? [`svg.graph path.edge[d=${q(picked.d)}]`] : []),
    "svg.graph path.edge.selected",
  ];
}
