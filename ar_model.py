"""
The autoregressive (AR) model of DiCoDe: an HF transformers language model that continues
a text prompt with keyframes of continuous deep tokens (paper Sec. 3.3, 3.4, supp. Sec. 6).

Sequence, one keyframe = a shared learned [BOV] + its N_q deep tokens:

    [text (L, left-padded) | BOV, q_(0,0) .. q_(0,Nq-1) | BOV, q_(1,0) .. | ...]

Eq. 2 factorises p(Q) token by token in this order: the hidden state at BOV_n predicts
q_(n,0), the state at q_(n,m) predicts q_(n,m+1); q_(n,Nq-1) predicts nothing (the next
input is a BOV). So the first N_q states of every keyframe block are exactly its N_q
predictions, and only they get a loss; the text gets none. Inputs are fed with
`inputs_embeds`: text through the LM's own token table, deep tokens through a 3-layer
MLP (C -> width); learned frame-index embeddings are added to [BOV] and tokens,
token-in-frame embeddings to tokens. A 3-layer MLP (width -> gmm.head_dim) gives the
head's parameters: a K-component GMM, one Gaussian or an L2 regression (Sec. 3.4,
Alg. 1, ablation Table 4), see gmm.py.

Token statistics (token_norm, off in the paper's configuration): the model reads and predicts deep tokens
standardised per (token, channel) with the training set's mean and std, stored with the weights;
generate() returns deep-token units. Losses and GMM variances are then in standardised units.

Padding: prompts are LEFT-padded and padding is masked out of attention; position ids
count real tokens only (cumsum of the mask), so a prompt gives the same results however
much padding it gets. (The released model attends to its padding; this one does not.)

Classifier-free guidance (the paper trains for it but leaves sampling open): in training
the prompt is replaced by the empty prompt "" with probability text_drop_prob, and each
input deep token by a learned [MASK] embedding with probability visual_drop_prob (5% in
the paper). At sampling with cfg_scale s != 1 the conditional and the unconditional ("")
passes run as one batch and their predicted distributions are combined per position:
    means  mu_k   = mu_u,k + s * (mu_c,k - mu_u,k)          (every component k)
    logits l_k    = l_u,k  + s * (l_c,k  - l_u,k)           (GMM mixture logits)
    raw variances = the conditional ones, unchanged
component k of one pass paired with component k of the other (the same head outputs); then
the component is drawn from softmax(l / temperature) and the sample from N(mu_k, var_scale *
var_c,k). Gaussian head: the mean only; L2 head: the prediction. Both passes are fed the
same sampled tokens. s = 1 is plain conditional sampling (no second pass).
That is cfg_mode "params". cfg_mode "samples" is the authors' release: each pass draws its own token
(x_c, x_u) from its own distribution, and x_u + s * (x_c - x_u) is the token fed back to both.
"""
import dataclasses
import inspect
import json
import os
import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn

import gmm

OPEN_CLIP_VOCAB = 49408  # open_clip's bundled BPE: SOT = 49406, EOT = 49407
_LLAMA32 = dict(vocab_size=128256, num_key_value_heads=8, tie_word_embeddings=True, rms_norm_eps=1e-5,
                max_position_embeddings=131072, rope_parameters=dict(
                    rope_type="llama3", rope_theta=500000.0, factor=32.0, low_freq_factor=1.0,
                    high_freq_factor=4.0, original_max_position_embeddings=8192))
_NO_DROPOUT = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
_CLIP_TEXT = dict(vocab_size=OPEN_CLIP_VOCAB, bos_token_id=OPEN_CLIP_VOCAB - 2, eos_token_id=OPEN_CLIP_VOCAB - 1)
BACKBONES = {  # name -> (family, HF config kwargs); tiny/mini: CPU sizes with the open_clip text vocabulary
    "tiny-gpt2": ("gpt2", dict(**_NO_DROPOUT, **_CLIP_TEXT, n_embd=64, n_layer=2, n_head=4, n_positions=512)),
    "tiny-llama": ("llama", dict(**_CLIP_TEXT, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)),
    "mini-gpt2": ("gpt2", dict(**_NO_DROPOUT, **_CLIP_TEXT, n_embd=256, n_layer=4, n_head=4, n_positions=512)),
    "gpt2": ("gpt2", dict(_NO_DROPOUT, n_embd=768, n_layer=12, n_head=12)),  # "117M"
    "gpt2-medium": ("gpt2", dict(_NO_DROPOUT, n_embd=1024, n_layer=24, n_head=16)),  # "345M"
    "gpt2-large": ("gpt2", dict(_NO_DROPOUT, n_embd=1280, n_layer=36, n_head=20)),  # "762M"
    "llama-3.2-1b": ("llama", dict(_LLAMA32, hidden_size=2048, intermediate_size=8192,
                                   num_hidden_layers=16, num_attention_heads=32)),  # 1.23B
    "llama-3.2-3b": ("llama", dict(_LLAMA32, hidden_size=3072, intermediate_size=8192,
                                   num_hidden_layers=28, num_attention_heads=24)),  # "3.3B"
}


@dataclass
class ARConfig:
    backbone: str = "tiny-gpt2"   # a BACKBONES name, or a local HF directory (from_pretrained)
    n_queries: int = 4            # deep tokens per keyframe (N_q; paper 16; the tokenizer's n_queries)
    token_dim: int = 8            # channels per deep token (C; paper 1024)
    max_keyframes: int = 8        # rows of the frame-index embedding (paper 16)
    text_len: int = 8             # text prefix length (paper 80)
    loss: str = "gmm"             # "gmm" | "gaussian" | "l2" (Table 4)
    gmm_k: int = 16               # GMM components
    text_drop_prob: float = 0.1   # training: prompt -> "" (classifier-free guidance)
    visual_drop_prob: float = 0.05  # training: input deep token -> learned [MASK]
    token_norm: bool = False      # standardise deep tokens per (token, channel) with training statistics
    text_tokenizer: str = ""      # "" = the backbone directory's own if it has one, else "open_clip" (BPE)
    backbone_config: dict = None  # HF config dict, set at build: rebuilds the shapes without weights

    @classmethod
    def from_dict(cls, saved):
        """The config a checkpoint saved; checkpoints written before the names were unified say n_q, k, tokenizer."""
        renamed = {"n_q": "n_queries", "k": "gmm_k", "tokenizer": "text_tokenizer"}
        return cls(**{renamed.get(key, key): value for key, value in saved.items()})


def _has_text_tokenizer(path):
    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, f)) for f in
                                       ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model"))


def _build_backbone(cfg):
    """HF base model (GPT2Model / LlamaModel) with SDPA attention, fp32 master weights."""
    from transformers import AutoConfig, AutoModel, GPT2Config, LlamaConfig
    if cfg.backbone_config is not None:  # a checkpoint or a later stage: shapes only
        return AutoModel.from_config(AutoConfig.for_model(**cfg.backbone_config), attn_implementation="sdpa")
    if cfg.backbone in BACKBONES:
        family, kw = BACKBONES[cfg.backbone]  # the paper's sizes keep their LMs' vocabularies (>= 49408)
        hf_cfg = (GPT2Config if family == "gpt2" else LlamaConfig)(**kw)
        return AutoModel.from_config(hf_cfg, attn_implementation="sdpa")
    if os.path.isdir(cfg.backbone):
        return AutoModel.from_pretrained(cfg.backbone, attn_implementation="sdpa", dtype=torch.float32)
    raise ValueError(f"backbone {cfg.backbone!r} is neither a named config ({', '.join(BACKBONES)}) "
                     f"nor a local directory")


def _mlp(d_in, d_hidden, d_out):
    """The paper's 3-layer MLP projections (supp. Sec. 6)."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_hidden), nn.GELU(),
                         nn.Linear(d_hidden, d_out))


class ARModel(nn.Module):
    """Text-conditioned AR model over keyframes of deep tokens.

        model = ARModel(ARConfig(backbone="tiny-gpt2", n_queries=8, token_dim=32))
        loss = model(*model.tokenize_text(captions), tokens, num_keyframes)   # tokens (B, T, N_q, C)
        out = model.generate(prompts, 5, var_scale=0.01, cfg_scale=1.0)   # (B, 5, N_q, C)
        model = ARModel.from_checkpoint("out/shapes/ar/ckpt.pt")          # config + weights
    """

    def __init__(self, cfg):
        super().__init__()
        if cfg.loss not in ("gmm", "gaussian", "l2"):
            raise ValueError(f"unknown loss {cfg.loss!r}, expected 'gmm', 'gaussian' or 'l2'")
        self.cfg = cfg = dataclasses.replace(cfg)  # a copy: filled in below
        self.backbone = _build_backbone(cfg)
        params = inspect.signature(self.backbone.forward).parameters  # transformers 5.x renames past_key_values
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        cfg.backbone_config = json.loads(self.backbone.config.to_json_string(use_diff=True))  # plain types
        ctx = self.backbone.config.max_position_embeddings  # GPT-2: n_positions
        if cfg.text_len + cfg.max_keyframes * (cfg.n_queries + 1) > ctx:
            raise ValueError(f"text_len {cfg.text_len} + max_keyframes {cfg.max_keyframes} x (1 + n_queries {cfg.n_queries}) "
                             f"exceeds the backbone's {ctx} positions")
        self._init_text_tokenizer()
        width = self.backbone.get_input_embeddings().embedding_dim
        C, P = cfg.token_dim, gmm.head_dim(cfg.loss, cfg.gmm_k, cfg.token_dim)
        self.in_proj = _mlp(C, width, width)
        self.out_proj = _mlp(width, width, P)
        self.bov = nn.Parameter(0.02 * torch.randn(width))
        self.mask_emb = nn.Parameter(0.02 * torch.randn(width))
        self.frame_emb = nn.Parameter(0.02 * torch.randn(cfg.max_keyframes, width))
        self.pos_emb = nn.Parameter(0.02 * torch.randn(cfg.n_queries, width))
        # the model reads and predicts (tokens - token_mean) / token_std; identity unless token_norm
        self.register_buffer("token_mean", torch.zeros(cfg.n_queries, C))
        self.register_buffer("token_std", torch.ones(cfg.n_queries, C))
        # classifier-free guidance keeps the conditional variances: True on those head outputs
        keep = torch.zeros(P, dtype=torch.bool)  # layouts: gmm [means KC | raw vars KC | logits K],
        keep[cfg.gmm_k * C:2 * cfg.gmm_k * C] = cfg.loss == "gmm"  # gaussian [mean C | raw var C], l2 [pred C]
        keep[C:] |= cfg.loss == "gaussian"
        self.register_buffer("cfg_keep", keep, persistent=False)
        empty_ids, empty_mask = self.tokenize_text([""])  # (1, text_len): the unconditional prompt
        self.register_buffer("empty_ids", empty_ids, persistent=False)
        self.register_buffer("empty_mask", empty_mask, persistent=False)

    # ---------------------------------------------------------------- text
    def _init_text_tokenizer(self):
        cfg = self.cfg
        if not cfg.text_tokenizer:
            cfg.text_tokenizer = cfg.backbone if _has_text_tokenizer(cfg.backbone) else "open_clip"
        if cfg.text_tokenizer == "open_clip":
            from open_clip.tokenizer import SimpleTokenizer
            tok = SimpleTokenizer(context_length=cfg.text_len)
            self._encode = lambda s: [tok.sot_token_id] + tok.encode(s) + [tok.eot_token_id]
            vocab = tok.vocab_size
        else:
            if not _has_text_tokenizer(cfg.text_tokenizer):
                raise ValueError(f"tokenizer directory {cfg.text_tokenizer!r} holds no tokenizer files")
            from transformers import AutoTokenizer
            tok = AutoTokenizer.from_pretrained(cfg.text_tokenizer)
            self._encode = lambda s: tok(s)["input_ids"]
            vocab = len(tok)
        rows = self.backbone.get_input_embeddings().num_embeddings
        if vocab > rows:
            raise ValueError(f"tokenizer {cfg.text_tokenizer!r} has {vocab} tokens but the backbone's "
                             f"text embedding has {rows} rows")

    def tokenize_text(self, prompts, trim=False):
        """Prompts -> ids, mask (B, text_len) long, LEFT-padded (pad id 0, mask 0); longer prompts keep
        their first text_len tokens. open_clip adds SOT/EOT, so "" is 2 tokens; GPT-2's own tokenizer: 0.

        trim=True drops the leading columns that are padding in every row (generation)."""
        L = self.cfg.text_len
        ids, mask = torch.zeros(len(prompts), L, dtype=torch.long), torch.zeros(len(prompts), L, dtype=torch.long)
        for i, p in enumerate(prompts):
            t = self._encode(p)
            if len(t) > L:
                warnings.warn(f"prompt {p!r} has {len(t)} text tokens; the model reads the first text_len={L}")
                t = t[:L]
            if t:
                ids[i, L - len(t):], mask[i, L - len(t):] = torch.tensor(t), 1
        if trim:
            n = int(mask.sum(1).max())
            ids, mask = ids[:, L - n:], mask[:, L - n:]
        return ids, mask

    # ---------------------------------------------------------------- visual inputs and head
    def set_token_stats(self, mean, std):
        """token_norm: mean and std (N_q, C) per (token, channel) of the training deep tokens, kept in the
        state dict. Deep tokens mix channels that barely vary across videos (std ~0.08) with others ~10x
        wider; standardised, every channel counts in the L2 loss and the input projection alike."""
        if not self.cfg.token_norm:
            raise ValueError("set_token_stats needs ARConfig(token_norm=True)")
        self.token_mean.copy_(mean)
        self.token_std.copy_(std.clamp(min=1e-6))

    def _visual_inputs(self, tokens):
        """(B, T, N_q, C) deep tokens of frames 0.. -> (B, T, 1 + N_q, W): [BOV, q_0 .. q_Nq-1]."""
        B, T = tokens.shape[:2]
        x = self.in_proj(tokens)  # (B, T, N_q, W)
        if self.training:  # always in the graph (even at p = 0) so DDP sees mask_emb used
            drop = torch.rand(x.shape[:3], device=x.device) < self.cfg.visual_drop_prob  # (B, T, N_q)
            x = torch.where(drop[..., None], self.mask_emb.to(x.dtype), x)
        frames = torch.arange(T, device=x.device)
        x = self._place(x, frames[:, None], slice(None))  # every slot
        return torch.cat([self._bov(frames).to(x.dtype).expand(B, T, 1, -1), x], dim=2)  # (B, T, 1 + N_q, W)

    def _place(self, x, frame, slot):
        """Projected deep tokens x (..., W) -> input vectors: plus the embeddings of their frame index and of
        their slot (token-in-frame index); frame and slot broadcast against x's leading dimensions."""
        return x + self.pos_emb[slot] + self.frame_emb[frame]

    def _bov(self, frame):
        """The [BOV] input vector opening frame(s) `frame`: (..., 1, W)."""
        return (self.bov + self.frame_emb[frame])[..., None, :]

    def _run(self, embeds, mask, cache=None):
        """Backbone states (B, S, W) of embeds (B, S, W), the last S of the positions mask (B, S0 + S) covers;
        cache: a DynamicCache holding the first S0 (none: S0 = 0), extended in place."""
        pos = (mask.cumsum(1) - 1).clamp(min=0)[:, mask.shape[1] - embeds.shape[1]:]  # real tokens count from 0
        return self.backbone(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=cache is not None,
                             **{self._cache_kwarg: cache}).last_hidden_state

    def nll(self, params, target):
        """Per-position loss (...) of head outputs (..., P) vs deep tokens (..., C), fp32: Sec. 3.4 / Alg. 1."""
        if self.cfg.loss == "gmm":
            return gmm.gmm_nll(params, target, self.cfg.gmm_k)
        if self.cfg.loss == "gaussian":
            return gmm.gaussian_nll(params, target)
        return gmm.l2_loss(params, target)

    def _head(self, text_ids, text_mask, tokens):
        """Head outputs (B, T, N_q, P) at every visual position, for standardised tokens (B, T, N_q, C): the
        state at BOV_n predicts q_(n,0), the state at q_(n,m) predicts q_(n,m+1)."""
        B, T, Nq = tokens.shape[:3]
        text = self.backbone.get_input_embeddings()(text_ids)  # (B, L, W)
        vis = self._visual_inputs(tokens).flatten(1, 2).to(text.dtype)  # (B, T * (1 + N_q), W)
        mask = torch.cat([text_mask, text_mask.new_ones(B, vis.shape[1])], 1)  # (B, L + T * (1 + N_q))
        h = self._run(torch.cat([text, vis], 1), mask)
        h = h[:, text.shape[1]:].unflatten(1, (T, Nq + 1))[:, :, :Nq]  # (B, T, N_q, W): states at BOV, q_0..q_Nq-2
        return self.out_proj(h)

    @torch.no_grad()
    def predict(self, prompts, tokens, *, var_scale=1.0, temperature=1.0, generator=None):
        """Teacher forcing: the deep token the model draws at every position of true deep tokens (B, T, N_q, C)
        of B prompts, given the true ones before it -> (B, T, N_q, C), deep-token units. What the decoder is
        fine-tuned on so that it tolerates the AR model's errors (supp. Sec. 6). Sampling as `generate`'s."""
        was_training = self.training
        self.eval()
        ids, mask = (x.to(tokens.device) for x in self.tokenize_text(list(prompts), trim=True))
        params = self._head(ids, mask, (tokens - self.token_mean) / self.token_std)  # (B, T, N_q, P)
        drawn = self._sample(params.float(), var_scale, temperature, generator)  # (B, T, N_q, C)
        self.train(was_training)
        return drawn * self.token_std + self.token_mean

    def forward(self, text_ids, text_mask, tokens, num_keyframes=None, reduction="mean"):
        """Training loss of Eq. 2 with the Sec. 3.4 head.

        text_ids, text_mask (B, L) from tokenize; tokens (B, T, N_q, C); num_keyframes (B,)
        real keyframes per sample (the rest is padding, masked out of the loss; None = all T).
        reduction="mean": mean over valid predictions; "none": per position (B, T, N_q)."""
        B, T, Nq, C = tokens.shape
        if (Nq, C) != (self.cfg.n_queries, self.cfg.token_dim) or T > self.cfg.max_keyframes:
            raise ValueError(f"tokens of shape {tuple(tokens.shape)} do not fit the model: n_queries={self.cfg.n_queries}, "
                             f"token_dim={self.cfg.token_dim}, max_keyframes={self.cfg.max_keyframes}")
        tokens = (tokens - self.token_mean) / self.token_std  # identity unless token_norm
        if self.training:  # classifier-free guidance: drop the prompt
            drop = (torch.rand(B, device=text_ids.device) < self.cfg.text_drop_prob)[:, None]  # (B, 1)
            L = text_ids.shape[1]  # left padding: the empty prompt's real tokens sit at the right end
            text_ids = torch.where(drop, self.empty_ids[:, -L:], text_ids)
            text_mask = torch.where(drop, self.empty_mask[:, -L:], text_mask)
        loss = self.nll(self._head(text_ids, text_mask, tokens), tokens)  # (B, T, N_q)
        if reduction == "none":
            return loss
        valid = torch.ones(B, T, dtype=torch.bool, device=tokens.device) if num_keyframes is None else \
            torch.arange(T, device=tokens.device) < num_keyframes.to(tokens.device)[:, None]  # (B, T)
        return (loss * valid[..., None]).sum() / (valid.sum() * Nq)

    # ---------------------------------------------------------------- sampling
    def _guide(self, params, cfg_scale):
        """(2B, P) conditional rows then unconditional rows -> guided (B, P), see module docstring."""
        c, u = params.float().chunk(2)
        return torch.where(self.cfg_keep, c, u + cfg_scale * (c - u))

    def _sample(self, params, var_scale, temperature, generator):
        if self.cfg.loss == "gmm":
            return gmm.gmm_sample(params, self.cfg.gmm_k, var_scale, temperature, generator)
        if self.cfg.loss == "gaussian":
            return gmm.gaussian_sample(params, var_scale, generator)
        return params

    @torch.no_grad()
    def generate(self, prompts, num_keyframes, *, var_scale=1.0, temperature=1.0, cfg_scale=1.0, cfg_mode="params",
                 generator=None, use_cache=True, prefix=None):
        """Sample deep tokens (B, num_keyframes, N_q, C) float32 for B prompts, token by token (Eq. 2).

        GMM: a component from softmax(logits / temperature) (0 = argmax), then mean + sqrt(var_scale
        * var) * noise (the released model uses var_scale 0.01; 0 = the component mean); Gaussian head:
        var_scale only; L2 head: deterministic. cfg_scale, cfg_mode: see the module docstring. Sampled
        values are fed back as inputs. use_cache=True decodes incrementally with the backbone's KV
        cache; False recomputes the whole sequence every step (same draws, same tokens).
        prefix (B, P, N_q, C): the first P keyframes are given (deep-token units), the model continues them."""
        cfg = self.cfg
        if cfg_mode not in ("params", "samples"):
            raise ValueError(f"unknown cfg_mode {cfg_mode!r}; expected 'params' or 'samples'")
        if num_keyframes > cfg.max_keyframes:
            raise ValueError(f"num_keyframes={num_keyframes} but the model's frame embedding covers "
                             f"max_keyframes={cfg.max_keyframes}")
        from transformers import DynamicCache
        was_training, B, Nq = self.training, len(prompts), cfg.n_queries
        self.eval()
        guided = cfg_scale != 1.0
        ids, tmask = self.tokenize_text(list(prompts) + [""] * B if guided else list(prompts), trim=True)
        dev = self.bov.device
        ids, tmask = ids.to(dev), tmask.to(dev)
        text = self.backbone.get_input_embeddings()(ids)  # (B', L, W), B' = 2B with guidance
        fed = torch.zeros(ids.shape[0], num_keyframes, Nq, cfg.token_dim, device=dev)  # inputs fed back
        first = 0 if prefix is None else prefix.shape[1]  # keyframes given
        if first:
            if prefix.shape[0] != B or prefix.shape[2:] != fed.shape[2:] or first > num_keyframes:
                raise ValueError(f"prefix of shape {tuple(prefix.shape)} does not fit {B} prompts, "
                                 f"{num_keyframes} keyframes of ({Nq}, {cfg.token_dim})")
            fed[:, :first] = ((prefix.to(dev) - self.token_mean) / self.token_std).repeat(ids.shape[0] // B, 1, 1, 1)
        mask = torch.cat([tmask, tmask.new_ones(ids.shape[0], num_keyframes * (Nq + 1))], 1)  # (B', L + T (1 + N_q))
        bov = lambda f: self._bov(f).to(text.dtype).expand(ids.shape[0], 1, -1)  # (B', 1, W): BOV_f
        # prefill: the text, the given keyframes and the BOV whose state predicts the first token to generate
        new = torch.cat([text, self._visual_inputs(fed[:, :first]).flatten(1, 2).to(text.dtype), bov(first)], 1)
        cache, n = DynamicCache() if use_cache else None, 0  # n: positions fed so far
        for f in range(first, num_keyframes):
            for m in range(Nq):
                n += new.shape[1]
                if use_cache:  # only the new positions; the cache holds the rest
                    h = self._run(new, mask[:, :n], cache)
                else:  # the reference: the whole sequence again
                    seq = torch.cat([text, self._visual_inputs(fed).flatten(1, 2).to(text.dtype)], 1)
                    h = self._run(seq[:, :n], mask[:, :n])
                params = self.out_proj(h[:, -1])  # (B', P): the last state predicts q_(f,m)
                if guided and cfg_mode == "samples":  # each pass its own draw, then guide the draws
                    c, u = self._sample(params.float(), var_scale, temperature, generator).chunk(2)  # (B, C) x2
                    q = u + cfg_scale * (c - u)
                else:
                    if guided:
                        params = self._guide(params, cfg_scale)  # (B, P)
                    q = self._sample(params.float(), var_scale, temperature, generator)  # (B, C)
                fed[:, f, m] = q.repeat(2, 1) if guided else q
                # fed back: q_(f,m) embedded as _visual_inputs does; its state predicts q_(f,m+1) ...
                new = self._place(self.in_proj(fed[:, f, m]), f, m).to(text.dtype)[:, None]  # (B', 1, W)
                if m == Nq - 1 and f + 1 < num_keyframes:  # ... or nothing: then BOV_(f+1) predicts q_(f+1,0)
                    new = torch.cat([new, bov(f + 1)], 1)  # (B', 2, W)
        self.train(was_training)
        return fed[:B] * self.token_std + self.token_mean  # (B, num_keyframes, N_q, C), deep-token units

    @torch.no_grad()
    def generate_long(self, prompts, num_keyframes, **sampling):
        """Past the trained length (a sliding window): the first max_keyframes keyframes as `generate` makes
        them, then each next one generated after the last max_keyframes - 1 as a prefix, whose frame indices
        start again at 0. sampling: generate's keywords. -> (B, num_keyframes, N_q, C)."""
        M = self.cfg.max_keyframes
        if M < 2:
            raise ValueError(f"a sliding window needs max_keyframes >= 2, the model has {M}")
        out = self.generate(prompts, min(num_keyframes, M), **sampling)
        while out.shape[1] < num_keyframes:
            out = torch.cat([out, self.generate(prompts, M, prefix=out[:, 1 - M:], **sampling)[:, -1:]], 1)
        return out

    def flop_params(self):
        """Parameters that cost FLOPs per token: all but the lookup tables (token, frame-index, position)."""
        lookups = {id(self.backbone.get_input_embeddings().weight), id(self.frame_emb), id(self.pos_emb)}
        lookups |= {id(p) for n, p in self.backbone.named_parameters() if n.startswith("wpe.")}  # GPT-2 positions
        return sum(p.numel() for p in self.parameters() if id(p) not in lookups)

    def flops_per_token(self, seq_len, flop_params=None):
        """Training FLOPs per token at sequence length seq_len, nanoGPT's estimate (PaLM appendix B):
        6 N for the matrix products forward + backward, plus 12 L H d S for attention.
        flop_params: self.flop_params(), if the caller has it already."""
        hf = self.backbone.config
        layers, heads, width = hf.num_hidden_layers, hf.num_attention_heads, hf.hidden_size
        return 6 * (flop_params or self.flop_params()) + 12 * layers * heads * (width // heads) * seq_len

    @classmethod
    def from_checkpoint(cls, ckpt, map_location="cpu"):
        """Rebuild from a train_ar.py checkpoint (path or loaded dict): config + weights, eval mode."""
        if not isinstance(ckpt, dict):
            ckpt = torch.load(ckpt, map_location=map_location, weights_only=True)
        model = cls(ARConfig.from_dict(ckpt["model_config"]))
        model.load_state_dict(ckpt["model"])
        return model.eval()
