# The last stage of the paper's pipeline (supp. Sec. 6: 20k steps after the tokenizer's 100k): the shapes decoder
# fine-tuned on the deep tokens the trained AR model predicts for real keyframes, so that it tolerates the AR
# model's errors; E and Q stay as they are (the AR model reads their tokens). Applied after config/shapes.py:
# $ python train_tokenizer.py config/shapes.py config/shapes_decoder_ft.py
# Measured on the seed-0 demo (NOTES.md, stop 25): direction 98.1 -> 99.7% over three sampling seeds, but the same 400
# steps on the clips' own tokens (ar_token_prob = 0) do as much: the gain is the decoder's extra steps, not the AR tokens.
out_dir = "out/shapes/tokenizer_ft"  # sample.py --tokenizer_ckpt out/shapes/tokenizer_ft/ckpt.pt
init_from = "out/shapes/tokenizer/ckpt.pt"
ar_ckpt = "out/shapes/ar/ckpt.pt"
ar_token_prob = 1.0  # every clip on the AR model's tokens, as the paper
learning_rate = 2e-4  # twice the floor of the tokenizer's cosine (min_lr 1e-4), held
min_lr = 2e-4
warmup_iters = 0
max_iters = 400
lr_decay_iters = 400
eval_interval = 400
order_clips = 0  # the AR model reads the tokens in their trained order
