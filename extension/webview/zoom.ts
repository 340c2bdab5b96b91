/**
 * Zoom and pan of the graph, by d3-zoom (wheel, trackpad pinch, drag, touch, double-click, with
 * a click after a drag suppressed), bounded to the route's extent so the user cannot pan into
 * blank space. The keyboard (+, -, 0, arrows) and the toolbar's buttons go through the same
 * behaviour. The transform moves the viewport group only; edges keep their screen width
 * (non-scaling strokes) and the pinned labels are placed for each transform (render.ts).
 *
 * Fit shows the whole route: the layout is made for the canvas (layout.ts), so Fit is the
 * identity unless the route is too big to be legible at that size; then it zooms out to show it
 * all. The view (view.zoom) is saved with the page.
 */

import {select, type Selection} from 'd3-selection';
import {zoom as d3zoom, zoomIdentity, type D3ZoomEvent, type ZoomBehavior, type ZoomTransform} from 'd3-zoom';
import type {GraphLayout} from './layout';
import {canvas, graph, viewport, zoomFit, zoomIn, zoomOut} from './shell';
import {persist, view} from './state';

const MAX_ZOOM = 12;

let transform: ZoomTransform = zoomIdentity;
let bounds: {width: number; height: number} = {width: 1, height: 1};
let listener: (t: ZoomTransform) => void = () => {};

const behaviour: ZoomBehavior<SVGSVGElement, unknown> = d3zoom<SVGSVGElement, unknown>()
  .extent((): [[number, number], [number, number]] => [
    [0, 0],
    [canvasWidth(), canvasHeight()],
  ])
  .scaleExtent([1, MAX_ZOOM])
  .clickDistance(4)
  .on('zoom', (event: D3ZoomEvent<SVGSVGElement, unknown>) => {
    transform = event.transform;
    viewport.setAttribute('transform', transform.toString());
    listener(transform);
  })
  .on('end', (event: D3ZoomEvent<SVGSVGElement, unknown>) => {
    const t = event.transform;
    view.zoom = {k: t.k, x: t.x, y: t.y};
    persist();
  });

const selection: Selection<SVGSVGElement, unknown, null, undefined> = select(graph);

/** The canvas's size, measured when the page is laid out again (measureCanvas), not on every
 * read: reading clientWidth after drawing would force a layout of the whole graph. */
let size = {width: 0, height: 0};

export function measureCanvas(): void {
  size = {width: canvas.clientWidth, height: canvas.clientHeight};
}

export function canvasWidth(): number {
  return size.width || 800;
}

export function canvasHeight(): number {
  return size.height || 600;
}

/** The transform shown now. */
export function currentTransform(): ZoomTransform {
  return transform;
}

/** Called with every new transform (the pinned labels follow it). */
export function onTransform(callback: (t: ZoomTransform) => void): void {
  listener = callback;
}

/** The scale at which the whole layout shows in the canvas (1 when it fits at its own size). */
function fitScale(): number {
  return Math.min(1, canvasWidth() / bounds.width, canvasHeight() / bounds.height);
}

/** A new layout: pan and zoom stay within it, and out no further than showing all of it. */
export function setBounds(layout: GraphLayout): void {
  bounds = {width: layout.width, height: layout.height};
  behaviour.translateExtent([
    [0, 0],
    [layout.width, layout.height],
  ]);
  behaviour.scaleExtent([fitScale(), MAX_ZOOM]);
}

/** Whether the view shows the whole layout (at fit); a re-layout then stays at fit. */
export function atFit(): boolean {
  return Math.abs(transform.k - fitScale()) < 1e-3 && transform.k <= 1 + 1e-3;
}

export function fit(): void {
  const k = fitScale();
  const x = (canvasWidth() - bounds.width * k) / 2;
  const y = (canvasHeight() - bounds.height * k) / 2;
  behaviour.transform(selection, zoomIdentity.translate(x, y).scale(k));
}

/** Show `view.zoom` (a restored page), within the bounds. */
export function applyZoom(): void {
  const {k, x, y} = view.zoom;
  behaviour.transform(selection, zoomIdentity.translate(x, y).scale(k));
}

/** Keep the current transform but within the (new) bounds. */
export function constrain(): void {
  behaviour.transform(selection, transform);
}

/** Pan so the layout point (x, y) is inside the canvas, `margin` px from its edges; centred if
 * it was outside. */
export function reveal(x: number, y: number, margin = 24): void {
  const [sx, sy] = transform.apply([x, y]);
  const w = canvasWidth(), h = canvasHeight();
  if (sx >= margin && sx <= w - margin && sy >= margin && sy <= h - margin) return;
  behaviour.translateTo(selection, x, y);
}

function zoomBy(factor: number): void {
  behaviour.scaleBy(selection, factor);
}

function pan(dx: number, dy: number): void {
  behaviour.translateBy(selection, dx / transform.k, dy / transform.k);
}

const KEYS: Record<string, () => void> = {
  '+': () => zoomBy(1.25),
  '=': () => zoomBy(1.25),
  '-': () => zoomBy(0.8),
  _: () => zoomBy(0.8),
  '0': fit,
  ArrowLeft: () => pan(40, 0),
  ArrowRight: () => pan(-40, 0),
  ArrowUp: () => pan(0, 40),
  ArrowDown: () => pan(0, -40),
};

export function installZoom(): void {
  behaviour(selection);
  selection.on('dblclick.zoom', null);
  canvas.addEventListener('keydown', (event) => {
    if (event.target !== canvas && !(event.target instanceof SVGElement)) return;
    const action = KEYS[event.key];
    if (action === undefined) return;
    action();
    event.preventDefault();
  });
  zoomIn.addEventListener('click', () => zoomBy(1.25));
  zoomOut.addEventListener('click', () => zoomBy(0.8));
  zoomFit.addEventListener('click', fit);
}
