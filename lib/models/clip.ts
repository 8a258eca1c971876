/**
 * CLIP text encoder (transformers CLIPTextModel / CLIPTextModelWithProjection) from its config.json:
 * CLIP-L (quick-GELU) and OpenCLIP bigG (GELU) alike. Causal self-attention only (no padding mask, as
 * diffusers calls it). Returns every hidden state so pipelines can take the last, the penultimate
 * (SDXL, clip skip) and the pooled output at the first EOS token.
 */
import { Tensor, tidy, tensor } from '../tensor';
import * as ops from '../ops';
import { ParamStore, type LoadOptions, type WeightSource, type LoadReport } from '../nn/params';
import { Linear, LayerNorm, MultiHeadAttention } from '../nn/layers';

export interface CLIPTextConfig {
  vocab_size: number; hidden_size: number; intermediate_size: number; num_hidden_layers: number;
  num_attention_heads: number; max_position_embeddings: number; hidden_act: string; layer_norm_eps?: number;
  projection_dim?: number; eos_token_id?: number; architectures?: string[]; [k: string]: unknown;
}

export interface CLIPTextOutput {
  lastHiddenState: Tensor;      // final_layer_norm(hidden_states[-1])  [B, L, D]
  hiddenStates: Tensor[];       // embeddings, then each layer's output (no final LN)
  pooled: Tensor;               // last_hidden_state at the first EOS   [B, D]
  textEmbeds: Tensor | null;    // pooled @ text_projection^T           [B, P]
}

const f32 = (t: Tensor): Tensor => ops.asDtype(t, 'f32');

class EncoderLayer {
  ln1: LayerNorm; attn: MultiHeadAttention; ln2: LayerNorm; fc1: Linear; fc2: Linear;
  constructor(p: ParamStore, name: string, c: CLIPTextConfig, readonly act: 'quick_gelu' | 'gelu' | 'gelu_tanh') {
    const eps = c.layer_norm_eps ?? 1e-5;
    const d = c.hidden_size, h = c.num_attention_heads;
    this.ln1 = new LayerNorm(p, `${name}.layer_norm1`, d, eps);
    this.attn = new MultiHeadAttention(p, `${name}.self_attn`, d, d, h, d / h, ['q_proj', 'k_proj', 'v_proj', 'out_proj'], true);
    this.ln2 = new LayerNorm(p, `${name}.layer_norm2`, d, eps);
    this.fc1 = new Linear(p, `${name}.mlp.fc1`, d, c.intermediate_size);
    this.fc2 = new Linear(p, `${name}.mlp.fc2`, c.intermediate_size, d);
  }
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const h = ops.add(this.attn.forward(this.ln1.forward(x), null, true), x);
      return ops.add(this.fc2.forward(this.fc1.forward(this.ln2.forward(h), this.act)), h);
    });
  }
}

export class CLIPTextModel {
  readonly params: ParamStore;
  private layers: EncoderLayer[] = [];
  private finalLn: LayerNorm;
  private proj: Linear | null;

  constructor(readonly config: CLIPTextConfig, component = 'text_encoder', withProjection?: boolean) {
    this.params = new ParamStore(component);
    const c = config, p = this.params;
    const act = c.hidden_act === 'quick_gelu' ? 'quick_gelu' : c.hidden_act === 'gelu' ? 'gelu' : c.hidden_act === 'gelu_new' || c.hidden_act === 'gelu_pytorch_tanh' ? 'gelu_tanh' : null;
    if (!act) throw new Error(`${component} config: hidden_act ${c.hidden_act} is not supported`);
    p.declare('text_model.embeddings.token_embedding.weight', [c.vocab_size, c.hidden_size], 'embedding');
    p.declare('text_model.embeddings.position_embedding.weight', [c.max_position_embeddings, c.hidden_size], 'embedding');
    for (let i = 0; i < c.num_hidden_layers; i++) this.layers.push(new EncoderLayer(p, `text_model.encoder.layers.${i}`, c, act));
    this.finalLn = new LayerNorm(p, 'text_model.final_layer_norm', c.hidden_size, c.layer_norm_eps ?? 1e-5);
    const proj = withProjection ?? (c.architectures ?? []).includes('CLIPTextModelWithProjection');
    this.proj = proj ? new Linear(p, 'text_projection', c.hidden_size, c.projection_dim ?? c.hidden_size, false) : null;
  }

  load(src: Map<string, WeightSource>, opts?: LoadOptions, label?: string): LoadReport {
    return this.params.load(src, opts, label);
  }
  parameterCount(): number {
    return this.params.parameterCount();
  }

  /** ids: Int32Array [B * L] row-major (what the tokenizer gives), or an i32/i64 tensor [B, L]. */
  forward(ids: Int32Array | number[], batch: number, opts: { device?: Tensor['device'] } = {}): CLIPTextOutput {
    const c = this.config;
    const L = ids.length / batch;
    if (!Number.isInteger(L) || L < 1 || L > c.max_position_embeddings)
      throw new Error(`${this.params.component}: input_ids must be [${batch}, L] with L <= ${c.max_position_embeddings}, got ${ids.length} ids`);
    for (let i = 0; i < ids.length; i++)
      if (ids[i] < 0 || ids[i] >= c.vocab_size) throw new Error(`${this.params.component}: token id ${ids[i]} at ${i} is outside the vocabulary (${c.vocab_size})`);
    // Pooled row per batch item: the first EOS (transformers: argmax for the legacy eos id 2).
    const eos = c.eos_token_id ?? 49407;
    const rows = new Int32Array(batch);
    for (let b = 0; b < batch; b++) {
      let pos = -1;
      if (eos === 2) {
        let best = -Infinity;
        for (let j = 0; j < L; j++) if (ids[b * L + j] > best) { best = ids[b * L + j]; pos = j; }
      } else {
        for (let j = 0; j < L && pos < 0; j++) if (ids[b * L + j] === eos) pos = j;
        if (pos < 0) pos = L - 1;
      }
      rows[b] = b * L + pos;
    }
    const device = opts.device ?? this.params.get('text_model.final_layer_norm.weight').device;
    return tidy(() => {
      const idT = tensor(Int32Array.from(ids), [batch, L], { dtype: 'i32', device });
      const posIds = new Int32Array(batch * L);
      for (let i = 0; i < batch * L; i++) posIds[i] = i % L;
      const tok = ops.embedding(idT, this.params.get('text_model.embeddings.token_embedding.weight'));
      const pos = ops.embedding(tensor(posIds, [batch, L], { dtype: 'i32', device }), this.params.get('text_model.embeddings.position_embedding.weight'));
      let h = ops.add(f32(tok), f32(pos));
      const hiddenStates = [h];
      for (const l of this.layers) {
        h = l.forward(h);
        hiddenStates.push(h);
      }
      const last = this.finalLn.forward(h);
      const pooled = ops.embedding(tensor(rows, [batch], { dtype: 'i32', device }), last.reshape([batch * L, c.hidden_size]));
      const textEmbeds = this.proj ? this.proj.forward(pooled) : null;
      return { lastHiddenState: last, hiddenStates, pooled, textEmbeds };
    });
  }

  dispose(): void {
    this.params.dispose();
  }
}
