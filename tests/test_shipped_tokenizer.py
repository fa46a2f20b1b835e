"""The shipped tokenizer on real validation motion (files it never trained on): its codes carry the motion."""

from __future__ import annotations

import torch

from motiontok import MotionTokenizer, load_motions
from motiontok.features import clip_features


def test_shipped_tokenizer_reconstructs_held_out_motion_better_than_the_mean(real_data_dir):
    tok = MotionTokenizer.load()
    assert tok.config["config"]["data"]["val_files"], "the shipped run must record its held-out files"
    clip = load_motions(real_data_dir / "walk2_subject4.csv")[0]  # one of the paper's four validation files
    assert clip.name in tok.config["config"]["data"]["val_files"]
    windows = torch.from_numpy(tok.split_windows(clip_features(clip))).float()[::4][:16]  # (16, 32, 127) spread out
    tokens = tok.encode(windows)  # greedy, through the torch path (16 windows)
    torch.testing.assert_close(torch.cat([tok.encode(w[None]) for w in windows[:3]]), tokens[:3], rtol=0, atol=0)
    z = tok.normalizer.normalize(windows)  # standardized units, as the paper's L2
    l2 = (tok.normalizer.normalize(tok.decode(tokens)) - z).flatten(1).norm(dim=1)  # (16,)
    l2_mean = z.flatten(1).norm(dim=1)  # predicting the training mean
    assert float(l2.mean()) < 0.85 * float(l2_mean.mean())
    other = tok.decode(tokens.roll(1, dims=0))  # the codes of another window decode to another motion
    l2_other = (tok.normalizer.normalize(other) - z).flatten(1).norm(dim=1)
    assert float(l2.mean()) < 0.85 * float(l2_other.mean())
