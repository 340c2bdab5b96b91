/**
 * Zoom and pan of the graph: the viewport group's transform (view.zoom, saved with the page),
 * moved by the wheel, a drag, the keyboard (+, -, 0, arrows) and the toolbar's buttons; `fit`
 * shows the whole graph when it stays legible, else its full width from the top (the output).
 */

import {canvas, viewport, zoomFit, zoomIn, zoomOut} from './shell';
import {persist, shown, view} from './state';

export function applyZoom(): void {
  const {k, x, y} = view.zoom;
  viewport.setAttribute('transform', `translate(${x} ${y}) scale(${k})`);
}

function zoomBy(factor: number, cx = canvas.clientWidth / 2, cy = canvas.clientHeight / 2): void {
  const z = view.zoom;
  const k = Math.min(8, Math.max(0.05, z.k * factor));
  view.zoom = {k, x: cx - ((cx - z.x) * k) / z.k, y: cy - ((cy - z.y) * k) / z.k};
  applyZoom();
  persist();
}

export function fit(): void {
  const layout = shown.layout;
  if (layout === null) return;
  const w = canvas.clientWidth || 800, h = canvas.clientHeight || 600;
  const whole = Math.min(w / layout.width, h / layout.height);
  const k = Math.min(2, whole >= 0.4 ? whole : Math.max(0.4, Math.min(1, w / layout.width)));
  view.zoom = {k, x: Math.max(0, (w - layout.width * k) / 2), y: Math.max(0, (h - layout.height * k) / 2)};
  applyZoom();
  persist();
}

let drag: {x: number; y: number; zx: number; zy: number; moved: boolean} | null = null;
let dragged = false;

/** Whether the last pointer gesture panned the graph: its click then opens nothing. */
export function panned(): boolean {
  return dragged;
}

function pan(dx: number, dy: number): void {
  view.zoom = {...view.zoom, x: view.zoom.x + dx, y: view.zoom.y + dy};
  applyZoom();
  persist();
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
  canvas.addEventListener(
    'wheel',
    (event) => {
      event.preventDefault();
      const box = canvas.getBoundingClientRect();
      zoomBy(Math.exp(-event.deltaY * 0.0015), event.clientX - box.left, event.clientY - box.top);
    },
    {passive: false},
  );
  canvas.addEventListener('pointerdown', (event) => {
    if (event.button !== 0) return;
    drag = {x: event.clientX, y: event.clientY, zx: view.zoom.x, zy: view.zoom.y, moved: false};
    dragged = false;
  });
  window.addEventListener('pointermove', (event) => {
    if (drag === null) return;
    const dx = event.clientX - drag.x, dy = event.clientY - drag.y;
    if (!drag.moved && Math.hypot(dx, dy) < 3) return;
    if (!drag.moved) canvas.setPointerCapture(event.pointerId);
    drag.moved = true;
    view.zoom = {...view.zoom, x: drag.zx + dx, y: drag.zy + dy};
    applyZoom();
  });
  window.addEventListener('pointerup', () => {
    if (drag?.moved) persist();
    dragged = drag?.moved ?? false;
    drag = null;
  });
  canvas.addEventListener('keydown', (event) => {
    const action = KEYS[event.key];
    if (action === undefined) return;
    action();
    event.preventDefault();
  });
  zoomIn.addEventListener('click', () => zoomBy(1.25));
  zoomOut.addEventListener('click', () => zoomBy(0.8));
  zoomFit.addEventListener('click', fit);
}
