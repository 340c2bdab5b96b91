/**
 * Settings that need checking before they reach the daemon: the device-map plan
 * (`lmscope.deviceMap`). The plans are the protocol's (`LoadModelParams.deviceMap`); a test
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
