// Checks the samplers against diffusers 0.27 trajectories (test/fixtures/schedulers, 46 runs): schedule
// (timesteps, sigmas, init_noise_sigma, alphas_cumprod) exactly; each step's model input, prev_sample and x0
// estimate within 1e-5 relative error when fed the stored sample, model output and noise; and each whole run
// replayed from x_init with the fake model and TorchCpuGenerator noise to the stored final sample.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  SamplerName, StepPlan, alphasCumprod, betas, createSampler, samplerConfigFromDiffusers, schedulerStepRef,
} from '../../lib/schedulers';
import { TorchCpuGenerator } from '../../lib/random/torch_cpu';
import { readSafetensors } from '../helpers/safetensors_min';

const dir = join(__dirname, '..', 'fixtures', 'schedulers');
const st = readSafetensors(join(dir, 'schedulers.safetensors'));

interface Run {
  id: string;
  scheduler: string;
  config: Record<string, unknown>;
  set_timesteps_kwargs: { num_inference_steps?: number; timesteps?: number[] };
  step_kwargs: { eta?: number };
  timesteps: number[];
  init_noise_sigma: number;
  sigmas: number[] | null;
  alphas_cumprod_at_timesteps: number[];
  steps: { i: number; t: number; tensors: string[]; noise_draws: number }[];
}
const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { noise_seed: number; runs: Run[] };

const TOL = 1e-5;
const f32 = Math.fround;
const worst = new Map<string, number>(); // largest relative error seen per quantity, printed at the end

function relErr(got: Float32Array, ref: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    num += (got[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

function expectClose(got: Float32Array, ref: Float32Array, what: string, kind: string): void {
  assert.is(got.length, ref.length, `${what}: length`);
  const e = relErr(got, ref);
  worst.set(kind, Math.max(worst.get(kind) ?? 0, e));
  assert.ok(e <= TOL, `${what}: relative error ${e.toExponential(3)} > ${TOL}`);
}

const linear = (x: Float32Array, eps: Float32Array, c: { a: number; b: number }) =>
  schedulerStepRef(x, eps, null, { a: c.a, b: c.b, c: 0 }, new Float32Array(x.length));

function samplerFor(run: Run) {
  const mapped = samplerConfigFromDiffusers({ _class_name: run.scheduler, ...run.config });
  assert.ok(mapped.name, `${run.id}: ${run.scheduler} maps to a sampler`);
  const { num_inference_steps: steps, timesteps } = run.set_timesteps_kwargs;
  return createSampler(mapped.name as SamplerName, {
    config: mapped.config, ...(steps !== undefined ? { steps } : {}), ...(timesteps ? { timesteps } : {}),
    ...(run.step_kwargs.eta !== undefined ? { eta: run.step_kwargs.eta } : {}),
  });
}

const expectedName: Record<string, SamplerName> = {
  DDIMScheduler: 'ddim', TCDScheduler: 'tcd', LCMScheduler: 'lcm', EulerDiscreteScheduler: 'euler',
  EulerAncestralDiscreteScheduler: 'euler_a',
};

test('betas and alphas_cumprod equal torch float32 bit for bit', () => {
  const refB = st.f32('betas');
  const refA = st.f32('alphas_cumprod');
  const b = betas();
  const a = alphasCumprod();
  for (let i = 0; i < 1000; i++) {
    if (b[i] !== refB[i]) assert.unreachable(`betas[${i}] ${b[i]} != ${refB[i]}`);
    if (a[i] !== refA[i]) assert.unreachable(`alphas_cumprod[${i}] ${a[i]} != ${refA[i]}`);
  }
});

test('fixture has 46 runs', () => {
  assert.is(index.runs.length, 46);
});

for (const run of index.runs) {
  test(`${run.id}: schedule`, () => {
    const s = samplerFor(run);
    assert.is(s.name, expectedName[run.scheduler]);
    assert.equal(s.timesteps, run.timesteps);
    assert.is(s.initNoiseSigma, run.init_noise_sigma);
    if (run.sigmas) assert.equal(s.sigmas, run.sigmas);
    const ac = alphasCumprod();
    assert.equal(run.timesteps.map((t) => ac[t]), run.alphas_cumprod_at_timesteps);
    const plan = s.plan();
    assert.is(plan.length, run.steps.length);
    plan.forEach((p, i) => {
      assert.is(p.t, run.steps[i].t, `step ${i} t`);
      assert.is(p.noise ? 1 : 0, run.steps[i].noise_draws, `step ${i} noise draws`);
    });
  });

  test(`${run.id}: every step from the stored inputs`, () => {
    const s = samplerFor(run);
    const plan = s.plan();
    const init = st.f32(`${run.id}.initial_sample`);
    const xInit = st.f32('x_init');
    const scaled = xInit.map((v) => v * f32(s.initNoiseSigma));
    expectClose(scaled, init, `${run.id} initial_sample`, 'initial_sample');
    run.steps.forEach((step, i) => {
      const p: StepPlan = plan[i];
      const key = `${run.id}.step${i}`;
      const x = st.f32(`${key}.sample`);
      const eps = st.f32(`${key}.model_output`);
      const noise = step.noise_draws > 0 ? st.f32(`${key}.noise0`) : null;
      const xin = x.map((v) => v * f32(p.inputScale));
      expectClose(xin, st.f32(`${key}.model_input`), `${key} model_input`, 'model_input');
      const prev = schedulerStepRef(x, eps, noise, p, new Float32Array(x.length));
      expectClose(prev, st.f32(`${key}.prev_sample`), `${key} prev_sample`, 'prev_sample');
      for (const name of ['pred_original_sample', 'denoised']) {
        if (step.tensors.includes(name)) {
          expectClose(linear(x, eps, p.x0), st.f32(`${key}.${name}`), `${key} ${name}`, name);
        }
      }
      if (step.tensors.includes('pred_noised_sample') && !p.noise) {
        // TCD without noise returns pred_noised_sample itself.
        expectClose(prev, st.f32(`${key}.pred_noised_sample`), `${key} pred_noised_sample`, 'pred_noised_sample');
      }
    });
  });

  test(`${run.id}: whole run from x_init with the fake model and TorchCpuGenerator noise`, () => {
    const s = samplerFor(run);
    const g = new TorchCpuGenerator(index.noise_seed);
    let x: Float32Array = st.f32('x_init').map((v) => v * f32(s.initNoiseSigma));
    for (const p of s.plan()) {
      const inScale = f32(p.inputScale);
      const tTerm = f32(0.001 * p.t);
      const eps = x.map((v) => f32(0.5 * f32(Math.tanh(f32(v * inScale)))) + tTerm);
      const noise = p.noise ? g.randn(x.length) : null;
      x = schedulerStepRef(x, eps, noise, p, new Float32Array(x.length));
    }
    expectClose(x, st.f32(`${run.id}.final_sample`), `${run.id} final_sample`, 'final_sample (replayed)');
  });
}

test('timestep grids match numpy for step counts outside the fixtures', () => {
  // Computed with numpy exactly as diffusers 0.27 set_timesteps does (np.arange / np.linspace / np.round).
  const ddim = (n: number, spacing: 'trailing' | 'leading' | 'linspace') =>
    createSampler('ddim', { steps: n, config: { timestep_spacing: spacing } }).timesteps;
  assert.equal(ddim(3, 'trailing'), [999, 666, 332]);
  assert.equal(ddim(7, 'trailing'), [999, 856, 713, 570, 428, 285, 142]);
  assert.equal(ddim(16, 'trailing'), [999, 937, 874, 811, 749, 687, 624, 561, 499, 437, 374, 311, 249, 187, 124, 61]);
  assert.equal(ddim(9, 'leading'), [889, 778, 667, 556, 445, 334, 223, 112, 1]);
  assert.equal(ddim(9, 'linspace'), [999, 874, 749, 624, 500, 375, 250, 125, 0]);
  assert.equal(ddim(1, 'linspace'), [0]);
  assert.equal(createSampler('tcd', { steps: 3 }).timesteps, [999, 679, 339]);
  assert.equal(createSampler('lcm', { steps: 16 }).timesteps,
    [999, 939, 879, 819, 759, 699, 639, 579, 499, 439, 379, 319, 259, 199, 139, 79]);
  const e = createSampler('euler', { steps: 7, config: { timestep_spacing: 'linspace' } });
  assert.equal(e.timesteps, [999, 832.5, 666, 499.5, 333, 166.5, 0]);
  assert.equal(e.sigmas, [14.614645004272461, 5.948917865753174, 2.9183082580566406, 1.6155833005905151,
    0.9323583245277405, 0.4935535192489624, 0.029167532920837402, 0]);
  const lead = createSampler('euler_a', { steps: 3, config: { timestep_spacing: 'leading' } });
  assert.equal(lead.timesteps, [667, 334, 1]);
  assert.equal(lead.sigmas, [2.9295496940612793, 0.9355101585388184, 0.04131447896361351, 0]);
});

test('DDIM trailing n=3: the step from 666 goes to 333, not to the next timestep 332', () => {
  const s = createSampler('ddim', { steps: 3 });
  const ac = alphasCumprod();
  const p = s.plan()[1];
  const sq = (v: number) => f32(Math.sqrt(v));
  assert.ok(Math.abs(p.a - sq(ac[333]) / sq(ac[666])) < 1e-15);
});

test('strength keeps the last int(n * strength) steps with the full schedule\'s coefficients', () => {
  const full = createSampler('ddim', { steps: 4 });
  const half = createSampler('ddim', { steps: 4, strength: 0.5 });
  assert.equal(half.timesteps, [499, 249]);
  assert.is(half.beginIndex, 2);
  assert.equal(half.plan(), full.plan().slice(2));
  const ac = alphasCumprod();
  assert.equal(half.addNoiseCoefficients(499), { a: f32(Math.sqrt(ac[499])), b: f32(Math.sqrt(f32(1 - ac[499]))) });
  // TCD: the last kept step is still the schedule's last step (no noise), as with diffusers' begin_index.
  const tcd = createSampler('tcd', { steps: 4, eta: 1, strength: 0.6 });
  assert.equal(tcd.timesteps, [499, 259]);
  assert.equal(tcd.plan().map((p) => p.noise), [true, false]);
  const eu = createSampler('euler', { steps: 4, strength: 0.75 });
  assert.equal(eu.timesteps, [749, 499, 249]);
  assert.equal(eu.addNoiseCoefficients(749), { a: 1, b: eu.sigmas![0] });
  assert.throws(() => createSampler('ddim', { steps: 4, strength: 0.2 }), /strength/);
  assert.throws(() => createSampler('ddim', { steps: 4, strength: 0 }), /strength/);
  assert.throws(() => eu.addNoiseCoefficients(500), /not in the schedule/);
});

test('schedulerStepRef is the float32 kernel a*x + b*eps + c*noise, left to right', () => {
  const x = new Float32Array([1.1, -2.3, 0.7]);
  const e = new Float32Array([0.3, 0.9, -1.7]);
  const z = new Float32Array([-0.2, 0.4, 1.3]);
  const p = { a: 1.0000001, b: -0.3333333333, c: 0.123456789 };
  const out = schedulerStepRef(x, e, z, p, new Float32Array(3));
  for (let i = 0; i < 3; i++) {
    const want = f32(f32(f32(f32(p.a) * x[i]) + f32(f32(p.b) * e[i])) + f32(f32(p.c) * z[i]));
    assert.is(out[i], want);
  }
  assert.throws(() => schedulerStepRef(x, e, z, p, new Float32Array(2)), /same length/);
  assert.throws(() => schedulerStepRef(x, e, null, p, new Float32Array(3)), /needs a noise tensor/);
});

test('Euler draws noise it does not use; DDIM eta 0 draws none', () => {
  for (const p of createSampler('euler', { steps: 4 }).plan()) {
    assert.ok(p.noise && p.drawsUnused && p.c === 0);
  }
  for (const p of createSampler('ddim', { steps: 4 }).plan()) assert.ok(!p.noise && p.c === 0);
  const ea = createSampler('euler_a', { steps: 2 }).plan();
  assert.ok(ea[0].noise && ea[0].c > 0 && !ea[0].drawsUnused);
  assert.ok(ea[1].noise && ea[1].c === 0 && ea[1].drawsUnused); // sigma_up is 0 on the last step
});

test('samplerConfigFromDiffusers reads the tiny model configs like from_config', () => {
  const read = (m: string) => JSON.parse(readFileSync(join(__dirname, '..', 'fixtures', m, 'diffusers', 'scheduler',
    'scheduler_config.json'), 'utf8'));
  const sd15 = samplerConfigFromDiffusers(read('tiny-sd15'));
  assert.is(sd15.name, 'ddim');
  assert.is(sd15.config.timestep_spacing, 'trailing');
  assert.is(sd15.config.clip_sample, false);
  assert.is(sd15.config.set_alpha_to_one, false);
  assert.equal(createSampler('ddim', { steps: 4, config: sd15.config }).timesteps, [999, 749, 499, 249]);

  const sdxl = samplerConfigFromDiffusers(read('tiny-sdxl'));
  assert.is(sdxl.name, 'euler');
  assert.is(sdxl.className, 'EulerDiscreteScheduler');
  assert.is(sdxl.config.timestep_spacing, 'leading');
  const eu = createSampler('euler', { steps: 4, config: sdxl.config });
  assert.equal(eu.timesteps, [751, 501, 251, 1]);
  assert.is(eu.initNoiseSigma, 4.236413478851318);

  // DDIMScheduler.from_config(euler_config, timestep_spacing="trailing"): missing keys take DDIM's defaults,
  // including clip_sample true, which these samplers refuse rather than silently ignore.
  const ddimFromXl = samplerConfigFromDiffusers(read('tiny-sdxl'), 'ddim', { timestep_spacing: 'trailing' });
  assert.is(ddimFromXl.name, 'ddim');
  assert.is(ddimFromXl.config.clip_sample, true);
  assert.is(ddimFromXl.config.set_alpha_to_one, true);
  assert.is(ddimFromXl.config.beta_schedule, 'scaled_linear');
  assert.throws(() => createSampler('ddim', { steps: 4, config: ddimFromXl.config }), /clip_sample/);
  const tcdFromXl = samplerConfigFromDiffusers(read('tiny-sdxl'), 'tcd');
  assert.equal(createSampler('tcd', { steps: 4, config: tcdFromXl.config }).timesteps, [999, 759, 499, 259]);

  assert.is(samplerConfigFromDiffusers({ _class_name: 'PNDMScheduler', beta_schedule: 'scaled_linear' }).name, null);
  assert.throws(() => samplerConfigFromDiffusers({ _class_name: 'DDIMScheduler', prediction_type: 'v_prediction' }),
    /prediction_type/);
  assert.throws(() => samplerConfigFromDiffusers({ _class_name: 'EulerDiscreteScheduler', use_karras_sigmas: true }),
    /use_karras_sigmas/);
});

test('options are validated with the option name', () => {
  assert.throws(() => createSampler('ddim', {}), /steps/);
  assert.throws(() => createSampler('ddim', { steps: 0 }), /steps/);
  assert.throws(() => createSampler('euler', { timesteps: [999] }), /timesteps/);
  assert.throws(() => createSampler('lcm', { steps: 4, timesteps: [999] }), /either steps or timesteps/);
  assert.throws(() => createSampler('lcm', { timesteps: [499, 999] }), /descending/);
  assert.throws(() => createSampler('lcm', { timesteps: [1000] }), /timesteps/);
  assert.throws(() => createSampler('tcd', { steps: 51 }), /steps/);
  assert.throws(() => createSampler('tcd', { steps: 4, eta: 1.5 }), /eta/);
  assert.throws(() => createSampler('lcm', { steps: 4, eta: 0.5 }), /eta/);
  assert.throws(() => createSampler('ddim', { steps: 4, config: { timestep_spacing: 'karras' as never } }), /timestep_spacing/);
  assert.throws(() => createSampler('nope' as SamplerName, { steps: 4 }), /unknown sampler/);
});

/** assert.throws(fn, re) that also requires an Error instance (uvu's tests only err.message, so a thrown object passes). */
function throwsNaming(fn: () => unknown, re: RegExp): void {
  try {
    fn();
  } catch (e) {
    assert.instance(e, Error);
    assert.match((e as Error).message, re);
    return;
  }
  assert.unreachable(`expected an error matching ${re}`);
}

test('eta (DDIM) and gamma (TCD) must be finite numbers in [0, 1]', () => {
  for (const eta of [2, 1.5, 1.0001, -0.1, Infinity, -Infinity, NaN, '0.5']) {
    throwsNaming(() => createSampler('ddim', { steps: 4, eta: eta as number }), /^ddim sampler: eta must be a finite number in \[0, 1\], got /);
    throwsNaming(() => createSampler('tcd', { steps: 4, eta: eta as number }), /^tcd sampler: eta \(TCD's gamma\) must be a finite number in \[0, 1\]/);
  }
  for (const eta of [0, 0.3, 1]) {
    for (const name of ['ddim', 'tcd'] as const) {
      for (const p of createSampler(name, { steps: 4, eta }).plan()) assert.ok([p.a, p.b, p.c].every(Number.isFinite));
    }
  }
});

test('numeric scheduler config fields must be finite and in range', () => {
  const cfg = (config: Record<string, unknown>) => () => createSampler('lcm', { steps: 4, config: config as never });
  throwsNaming(cfg({ timestep_scaling: Infinity }), /timestep_scaling must be a finite number, got Infinity/);
  throwsNaming(cfg({ timestep_scaling: NaN }), /timestep_scaling must be a finite number, got NaN/);
  throwsNaming(cfg({ timestep_scaling: 0 }), /timestep_scaling must be a positive number/);
  throwsNaming(cfg({ timestep_scaling: 1e30 }), /timestep_scaling must be a positive number small enough/);
  throwsNaming(cfg({ beta_start: '0.00085' }), /beta_start must be a finite number, got "0.00085"/);
  throwsNaming(cfg({ beta_end: Infinity }), /beta_end must be a finite number, got Infinity/);
  throwsNaming(cfg({ beta_start: 0.02, beta_end: 0.01 }), /need 0 < beta_start < beta_end < 1, got beta_start 0.02, beta_end 0.01/);
  throwsNaming(cfg({ beta_start: 0, beta_end: 0.01 }), /need 0 < beta_start < beta_end < 1/);
  throwsNaming(cfg({ beta_end: 1 }), /need 0 < beta_start < beta_end < 1/);
  // Inside (0, 1) but so large that alphas_cumprod reaches 0: every sampler would divide by it.
  throwsNaming(() => createSampler('ddim', { steps: 4, config: { beta_start: 0.5, beta_end: 0.99, beta_schedule: 'linear' } }),
    /beta_start 0.5, beta_end 0.99 .* drive alphas_cumprod to 0/);
  throwsNaming(cfg({ num_train_timesteps: 1e9 }), /num_train_timesteps must be an integer in \[2, 1000000\]/);
  throwsNaming(cfg({ steps_offset: Infinity }), /steps_offset must be a finite number/);
  throwsNaming(cfg({ original_inference_steps: 2.5 }), /original_inference_steps must be an integer/);
  throwsNaming(() => createSampler('ddim', { steps: 4, config: null as never }), /scheduler config must be an object, got null/);
  throwsNaming(() => samplerConfigFromDiffusers(null as never), /samplerConfigFromDiffusers: the scheduler config must be a JSON object, got null/);
});

test('Euler, like DDIM, rejects timesteps outside [0, num_train_timesteps - 1]', () => {
  for (const name of ['ddim', 'euler', 'euler_a'] as const) {
    throwsNaming(() => createSampler(name, { steps: 4, config: { timestep_spacing: 'leading', steps_offset: 300 } }),
      new RegExp(`^${name} sampler: timestep 1050 \\(leading spacing, steps_offset 300\\) is outside \\[0, num_train_timesteps - 1 = 999\\]`));
    // numpy's arange(1000, 0, -1000/457) has 458 elements, the last giving timestep -1 (diffusers then reads
    // alphas_cumprod[-1], the last entry): refused rather than run.
    throwsNaming(() => createSampler(name, { steps: 457 }), /trailing spacing with steps 457 gives 458 timesteps, one of them -1/);
    // The largest offset that fits still runs.
    assert.equal(createSampler(name, { steps: 4, config: { timestep_spacing: 'leading', steps_offset: 249 } }).timesteps, [999, 749, 499, 249]);
  }
});

test('misspelt config keys are Errors; keys diffusers files carry but the samplers do not read are ignored', () => {
  throwsNaming(() => createSampler('ddim', { steps: 4, config: { timestep_spacin: 'leading' } as never }),
    /unknown key "timestep_spacin"; did you mean timestep_spacing\?/);
  throwsNaming(() => createSampler('ddim', { steps: 4, config: { step_offset: 1 } as never }), /did you mean steps_offset\?/);
  throwsNaming(() => createSampler('ddim', { steps: 4, config: { Beta_End: 0.012 } as never }), /did you mean beta_end\?/);
  throwsNaming(() => samplerConfigFromDiffusers({ _class_name: 'DDIMScheduler' }, 'ddim', { clip_sampel: false } as never),
    /did you mean clip_sample\?/);
  // A whole diffusers config (as lib/train/teacher.ts hands alphasCumprod) and a file with keys of other classes.
  const raw = {
    _class_name: 'DDIMScheduler', _diffusers_version: '0.27.2', trained_betas: null, clip_sample_range: 1, thresholding: false,
    dynamic_thresholding_ratio: 0.995, sample_max_value: 1, rescale_betas_zero_snr: false, sigma_min: null, sigma_max: null,
    timestep_type: 'discrete', interpolation_type: 'linear', use_karras_sigmas: false, final_sigmas_type: 'zero', toString: 5,
    clip_sample: false, set_alpha_to_one: false, steps_offset: 1,
  };
  assert.equal(alphasCumprod(raw as never), alphasCumprod());
  assert.equal(createSampler('ddim', { steps: 4, config: raw as never }).timesteps, [999, 749, 499, 249]);
  // A typo in the file itself is ignored, as diffusers' from_config ignores it.
  assert.is(samplerConfigFromDiffusers({ ...raw, timestep_spacin: 'leading' }).config.timestep_spacing, 'leading');
});

test('largest relative errors (informational)', () => {
  const lines = [...worst.entries()].map(([k, v]) => `${k}: ${v.toExponential(2)}`);
  if (process.env.HYPERSD_VERBOSE) console.log(`\n  worst relative error per quantity: ${lines.join(', ')}`);
  assert.ok(worst.size > 0);
});

test('an EDM-formulated scheduler config (Playground v2.5) is an Error, not sampled with betas', () => {
  assert.throws(() => samplerConfigFromDiffusers({ _class_name: 'EDMDPMSolverMultistepScheduler', sigma_min: 0.002, sigma_max: 80 }),
    /_class_name="EDMDPMSolverMultistepScheduler" is not supported \(EDM-formulated models are not supported\)/);
  assert.throws(() => samplerConfigFromDiffusers({ _class_name: 'EDMEulerScheduler' }, 'euler'), /EDM-formulated/);
});

test.run();
