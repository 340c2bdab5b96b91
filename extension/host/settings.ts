/**
 * Settings that need checking before they reach the daemon: the device-map plan
 * (`lmscope.deviceMap`) and the adapter folder (`lmscope.adapter`). The plans are the protocol's (`LoadModelParams.deviceMap`); a test
 * checks this list against the schema and the manifest's enum.
 */

import type {LoadModelParams} from '../shared/protocol/types';

export type DeviceMapPlan = NonNullable<LoadModelParams['deviceMap']>;

export const DEVICE_MAP_PLANS: readonly DeviceMapPlan[] = ['auto', 'balanced', 'balanced_low_0', 'sequential'];

/** The plan the setting names, or undefined for "" (one device) and anything unknown. */
export function deviceMapSetting(value: string | undefined): DeviceMapPlan | undefined {
  const plan = (value ?? '').trim();
  return (DEVICE_MAP_PLANS as readonly string[]).includes(plan) ? (plan as DeviceMapPlan) : undefined;
}

/**
 * The PEFT/LoRA adapter folder `lmscope.adapter` names (`LoadModelParams.adapter`), or undefined
 * for "" (the model alone). The daemon checks the folder (and expands a leading `~`).
 */
export function adapterSetting(value: string | undefined): string | undefined {
  const folder = (value ?? '').trim();
  return folder === '' ? undefined : folder;
}

/** The most tokens a trace may generate (protocol: TraceParams.generate's maximum). */
export const MAX_GENERATE = 1024;

/** `lmscope.generateTokens`: a whole number in 0..MAX_GENERATE, anything else 0 (none). */
export function generateTokensSetting(value: number | undefined): number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= MAX_GENERATE ? value : 0;
}

/** The count typed into "Trace Selection and Generate…": the number, or why it is none. */
export function parseGenerateCount(text: string): number | string {
  const trimmed = text.trim();
  if (!/^\d+$/.test(trimmed)) return 'a whole number of tokens, e.g. 5';
  const value = Number(trimmed);
  return value <= MAX_GENERATE ? value : `at most ${MAX_GENERATE} tokens`;
}
