# The paper-size deep tokenizer (paper Sec. 4.1 and supp. Sec. 6): CLIP-ViT-H/14 (LAION-2B) as the frozen E,
# a 4-layer width-1024 Q with 16 queries, and a pretrained latent video diffusion model as the decoder, fine-tuned
# 100k steps at lr 1e-5 (AdamW, constant), batch 64, on 16-frame 256 x 256 clips with a random frame stride 1..6.
# The paper's decoder is DynamiCrafter-256; here it is a ModelScope-T2V / zeroscope-style diffusers checkpoint
# (UNet3DConditionModel + AutoencoderKL): the deep tokens take its 1024-d text cross-attention slot.
# Needs GPUs and local weights (no downloads here): set pretrained_dir, and clip_pretrained to a local file if
# open_clip's laion2b_s32b_b79k weights are not in the HF cache.
# $ torchrun --standalone --nproc_per_node=4 train_tokenizer.py config/tokenizer_paper.py
out_dir = "out/tokenizer_paper"
data_dir = "data/webvid"  # videos.csv: path,caption of the training videos (WebVid-10M in the paper)
# E: open_clip ViT-H-14, all 257 x 1280 tokens of the last block, frozen (paper supp. 6: "CLIP-ViT-H/14 from LAION")
clip_model = "ViT-H-14"
clip_pretrained = "laion2b_s32b_b79k"
clip_pretrain_iters = 0  # a real CLIP: no stand-in pre-training
train_encoder = False
# Q: the release's Perceiver-style resampler, 4 layers, width 1024, 16 queries, 12 heads of 64 (supp. 6: 12 heads);
# the release starts it from DynamiCrafter's own resampler (its first 16 queries): set q_pretrained to that file
q_type = "perceiver"
n_queries = 16
token_dim = 1024
q_layers = 4
q_heads = 12
q_head_dim = 64
q_pretrained = ""
# decoder: the latent video UNet + frozen VAE in pretrained_dir/unet and pretrained_dir/vae (diffusers layout); each
# frame cross-attends to its own keyframe's 16 tokens (the release: head for the first half, rear for the second)
denoiser = "unet3d"
per_frame_context = True
pretrained_dir = "weights/zeroscope"  # placeholder: a local copy of e.g. zeroscope_v2 / text-to-video-ms-1.7b
# clips: 16 frames (head + 14 in-between + rear) of 256 x 256, frame stride drawn from 1..6 (supp. 6)
image_size = 256
clip_frames = 15
max_stride = 6
eval_stride = 6  # the paper samples at frame stride 6
data_fps = None  # frames as stored: DynamiCrafter's frame stride counts the source video's frames
probe_videos = 0  # the linear probes read the shapes set's captions and analyser: off on real videos
eval_clips = 8
eval_interval = 5000
log_interval = 50
# diffusion: v-prediction, zero-terminal-SNR scaled-linear schedule, 10% condition drop (the release's); the diffusion loss alone
# (no keyframe redraw loss) and Q's queries in their own order (no renumbering): the paper's. Eval reconstructions
# with the paper's sampler: DDIM 50 steps, CFG 7.5, guidance rescale 0.7
cond_drop_prob = 0.1
keyframe_loss_weight = 0.0
order_clips = 0
ddim_steps = 50
cfg_scale = 7.5
guidance_rescale = 0.7
# optimisation: AdamW, lr 1e-5 constant, no warm-up, 100k steps, global batch 64 = batch_size x
# gradient_accumulation_steps (micro-batches over all processes): 4 GPUs x 16 clips, 4 micro-batches of 16 on one
batch_size = 16
gradient_accumulation_steps = 4
learning_rate = 1e-5
weight_decay = 0.01  # the paper names AdamW and no decay: torch.optim.AdamW's default
min_lr = 1e-5  # = learning_rate: constant
warmup_iters = 0
max_iters = 100000
lr_decay_iters = 100000
# system
dtype = "bfloat16"
compile = True
