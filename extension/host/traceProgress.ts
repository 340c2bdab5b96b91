/**
 * What Trace Selection's progress notification says, from what is really happening: the daemon
 * starting, the model loading, an earlier trace still running, the daemon's own progress
 * (layers, route nodes, neurons, projections), then opening the graph. Pure (no `vscode`): the
 * command passes the daemon's state and progress messages in.
 */

import type {DaemonState} from './daemon';

/** The spec the user wrote, as a person reads it ("default" is the embedded model). */
function modelLabel(spec: string | undefined): string {
  if (spec === undefined || spec === '' || spec === 'default') return 'the default model';
  const base = spec.replace(/[\\/]+$/, '').split(/[\\/]/).pop() ?? spec;
  return base || spec;
}

/**
 * What the notification says while a trace waits for the daemon in `state` (with `running`:
 * whether the daemon's process is up); null when nothing is in the way and the trace can start.
 */
export function waitingMessage(state: DaemonState, running: boolean): string | null {
  switch (state.kind) {
    case 'stopped':
    case 'starting':
      return 'starting the daemon…';
    case 'loading': {
      const pct = state.percentage === undefined ? '' : ` ${Math.round(state.percentage)}%`;
      return `loading ${modelLabel(state.model)}…${pct}`;
    }
    case 'tracing':
      return state.model === null ? 'loading the model…' : 'waiting for the trace before this one…';
    case 'ready':
      return running ? null : 'starting the daemon…';
    case 'error':
      // modelReady() restarts a crashed daemon or reports the error; until then, say so.
      return 'starting the daemon…';
    case 'untrusted':
      return null;
  }
}

/** The notification line for one of the daemon's progress messages during a trace. */
export function tracingMessage(daemonMessage: string | undefined): string {
  if (daemonMessage === undefined || daemonMessage.trim() === '') return 'tracing…';
  const text = daemonMessage.trim();
  // "layer 3/30": the forward pass with per-layer attribution.
  return /^layer \d+\/\d+$/.test(text) ? `tracing: ${text}` : `${text}…`;
}

/** After the daemon's answer: the trace is saved and its graph opens. */
export const OPENING_MESSAGE = 'opening the graph…';
