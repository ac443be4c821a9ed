"""Model-based rewards (otca_lib/reward_models.py) on tiny random-init models built offline from configs:
shapes, batch independence, preprocessing parity with transformers' processor, the open_clip (HPSv2.1) and
ImageReward checkpoint converters, loading through the real local-folder paths, offline errors, video rewards."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from otca_lib import reward_models as rm
from otca_lib.rewards import REWARDS, build_rewards, reward

transformers = pytest.importorskip("transformers")
from transformers import BlipConfig, CLIPConfig, CLIPModel, CLIPTokenizer, BertTokenizer  # noqa: E402
from transformers.convert_slow_tokenizer import bytes_to_unicode  # noqa: E402

PROMPTS = ["a red cat", "a dog on the moon", "a red cat"]


def _clip_tokenizer():
    chars = sorted(set(bytes_to_unicode().values()))
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": 2 * len(chars), "<|endoftext|>": 2 * len(chars) + 1})
    return CLIPTokenizer(vocab=vocab, merges=[])  # 514 tokens: bytes (+ "</w>"), bos 512, eos 513


def _tiny_clip_config(act="quick_gelu"):
    return CLIPConfig(
        text_config=dict(vocab_size=514, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, hidden_act=act,
                         bos_token_id=512, eos_token_id=513, pad_token_id=513),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, hidden_act=act),
        projection_dim=16)


def _image_processor():
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    return CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny CLIP saved like a hub snapshot: model, tokenizer, preprocessor_config.json."""
    d = tmp_path_factory.mktemp("tiny_clip")
    torch.manual_seed(0)
    model = CLIPModel(_tiny_clip_config()).eval()
    model.save_pretrained(d)
    _clip_tokenizer().save_pretrained(d)
    _image_processor().save_pretrained(d)
    return str(d)


def _direct_clip_cos(folder, pixels, prompts):
    """Reference: the saved model called directly on our preprocessing and the saved tokenizer."""
    model, tok = CLIPModel.from_pretrained(folder).eval(), _clip_tokenizer()
    x = rm.preprocess(pixels, 32, 32)
    t = tok(prompts, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    with torch.no_grad():
        i = F.normalize(model.get_image_features(pixel_values=x).pooler_output, dim=-1)
        s = F.normalize(model.get_text_features(**t).pooler_output, dim=-1)
    return (i * s).sum(-1), model


def test_preprocess_matches_transformers_processor():
    g = torch.Generator().manual_seed(0)
    proc = _image_processor()
    xs = torch.linspace(0, 6.28, 300)
    smooth = 0.5 + 0.4 * torch.sin(3 * xs)[None, None, :] * torch.cos(2 * xs[:200])[None, :, None]
    cases = [(torch.rand(3, h, w, generator=g), 0.2) for h, w in [(45, 61), (96, 130), (20, 27), (32, 32)]]
    for img, max_tol in cases + [(smooth.expand(3, -1, -1), 0.03)]:  # up/downscaling, odd crops, identity
        img = (img * 255).round().to(torch.uint8)
        ref = proc(images=img.permute(1, 2, 0).numpy(), return_tensors="pt").pixel_values
        ours = rm.preprocess(img[None].float() / 255, 32, 32)
        assert ours.shape == ref.shape == (1, 3, 32, 32)
        diff = (ours - ref).abs()
        # The processor rounds to uint8 after PIL's resize (and clips between its two separable passes), ours
        # stays float: measured mean 0.004-0.005 in normalised units (1/255/std = 0.015), max 0.01 on a smooth
        # image, up to 0.153 at scattered pixels of uniform noise where bicubic overshoot is clipped differently.
        assert diff.mean() < 0.01 and diff.max() < max_tol, (img.shape, diff.mean(), diff.max())


def test_clip_score_pickscore_from_folder_shapes_and_batch_independence(clip_dir):
    g = torch.Generator().manual_seed(1)
    pixels = torch.rand(3, 3, 40, 48, generator=g)
    fn = rm.build_reward("clip_score", source=clip_dir)
    r = fn(pixels, PROMPTS)
    assert r.shape == (3,) and r.dtype == torch.float32 and r.device == pixels.device
    ref, model = _direct_clip_cos(clip_dir, pixels, PROMPTS)
    torch.testing.assert_close(r, ref, atol=1e-5, rtol=0)
    single = torch.cat([fn(pixels[i:i + 1], PROMPTS[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(r, single, atol=1e-5, rtol=0)
    # a video of one repeated frame scores like the frame
    video = pixels.unsqueeze(2).expand(-1, -1, 3, -1, -1)
    torch.testing.assert_close(fn(video, PROMPTS), r, atol=1e-5, rtol=0)
    # PickScore = logit_scale * cosine (its processor comes from the model folder when it has one)
    ps = rm.build_reward("pickscore", source=clip_dir)(pixels, PROMPTS)
    torch.testing.assert_close(ps, model.logit_scale.exp().item() * ref, atol=1e-4, rtol=0)
    # differentiable in the pixels when called outside no_grad
    px = pixels.clone().requires_grad_(True)
    fn(px, PROMPTS).sum().backward()
    assert px.grad is not None and px.grad.abs().sum() > 0


def test_aesthetic_head_loads_the_public_key_layout(clip_dir, tmp_path):
    torch.manual_seed(2)
    sizes = [16, 1024, 128, 64, 16, 1]  # tiny CLIP projection_dim 16 in place of ViT-L/14's 768
    sd = {}
    for idx, (a, b) in zip([0, 2, 4, 6, 7], zip(sizes[:-1], sizes[1:])):
        sd[f"layers.{idx}.weight"], sd[f"layers.{idx}.bias"] = torch.randn(b, a) / a ** 0.5, torch.randn(b)
    path = tmp_path / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save(sd, path)
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    model = CLIPModel.from_pretrained(clip_dir).eval()
    with torch.no_grad():
        x = F.normalize(model.get_image_features(pixel_values=rm.preprocess(pixels, 32, 32)).pooler_output, dim=-1)
    for idx in [0, 2, 4, 6, 7]:
        x = x @ sd[f"layers.{idx}.weight"].T + sd[f"layers.{idx}.bias"]
    for src in (str(path), str(tmp_path)):  # the file itself, or the folder holding it
        r = rm.build_reward("aesthetic", source=src, clip_source=clip_dir)(pixels, PROMPTS[:2])
        assert r.shape == (2,) and r.dtype == torch.float32
        torch.testing.assert_close(r, x[:, 0], atol=1e-4, rtol=1e-5)


# ------------------------------------------------------------------------------------------ HPSv2.1 / open_clip
def _hf_to_open_clip(sd):
    """Test-side inverse of the library converter, written from open_clip's naming."""
    out = {}
    for k, v in sd.items():
        if k.endswith("position_ids"):
            continue
        n = (k.replace("vision_model.embeddings.class_embedding", "visual.class_embedding")
              .replace("vision_model.embeddings.position_embedding.weight", "visual.positional_embedding")
              .replace("vision_model.embeddings.patch_embedding.weight", "visual.conv1.weight")
              .replace("text_model.embeddings.token_embedding.weight", "token_embedding.weight")
              .replace("text_model.embeddings.position_embedding.weight", "positional_embedding")
              .replace("vision_model.pre_layrnorm", "visual.ln_pre")
              .replace("vision_model.post_layernorm", "visual.ln_post")
              .replace("text_model.final_layer_norm", "ln_final")
              .replace("vision_model.encoder.layers", "visual.transformer.resblocks")
              .replace("text_model.encoder.layers", "transformer.resblocks")
              .replace("layer_norm1", "ln_1").replace("layer_norm2", "ln_2")
              .replace("mlp.fc1", "mlp.c_fc").replace("mlp.fc2", "mlp.c_proj")
              .replace("self_attn.out_proj", "attn.out_proj"))
        if k == "visual_projection.weight":
            out["visual.proj"] = v.T.contiguous()
        elif k == "text_projection.weight":
            out["text_projection"] = v.T.contiguous()
        elif ".self_attn.q_proj." in k:
            leaf = k.rpartition(".")[2]
            parts = [sd[k.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")]
            out[n.rpartition(".self_attn")[0] + f".attn.in_proj_{leaf}"] = torch.cat(parts)
        elif ".self_attn.k_proj." in k or ".self_attn.v_proj." in k:
            continue
        else:
            out[n] = v
    out["attn_mask"] = torch.full((16, 16), float("-inf")).triu(1)  # a buffer some open_clip versions save
    return out


def _open_clip_reference(sd, pixels, ids, heads=4, patch=8):
    """An open_clip-style forward written directly on the open_clip state dict (nn.MultiheadAttention)."""
    def blocks(x, prefix, mask=None):
        i = 0
        while f"{prefix}{i}.ln_1.weight" in sd:
            p = f"{prefix}{i}."
            mha = nn.MultiheadAttention(x.shape[-1], heads, batch_first=True)
            names = ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")
            mha.load_state_dict({n: sd[p + "attn." + n] for n in names})
            h = F.layer_norm(x, x.shape[-1:], sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
            x = x + mha(h, h, h, attn_mask=mask, need_weights=False)[0]
            h = F.layer_norm(x, x.shape[-1:], sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
            h = F.gelu(F.linear(h, sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"]))
            x = x + F.linear(h, sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])
            i += 1
        return x

    def ln(x, name):
        return F.layer_norm(x, x.shape[-1:], sd[name + ".weight"], sd[name + ".bias"])
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=patch).flatten(2).transpose(1, 2)
    x = torch.cat([sd["visual.class_embedding"].expand(x.shape[0], 1, -1), x], 1) + sd["visual.positional_embedding"]
    x = blocks(ln(x, "visual.ln_pre"), "visual.transformer.resblocks.")
    img = ln(x[:, 0], "visual.ln_post") @ sd["visual.proj"]
    t = sd["token_embedding.weight"][ids] + sd["positional_embedding"][: ids.shape[1]]
    causal = torch.full((ids.shape[1],) * 2, float("-inf")).triu(1)
    t = ln(blocks(t, "transformer.resblocks.", causal), "ln_final")
    txt = t[torch.arange(ids.shape[0]), ids.argmax(-1)] @ sd["text_projection"]
    return F.normalize(img, dim=-1), F.normalize(txt, dim=-1)


def test_open_clip_converter_round_trip_reference_forward_and_hps_file(clip_dir, tmp_path):
    torch.manual_seed(4)
    cfg = _tiny_clip_config(act="gelu")  # open_clip ViT-H-14 uses exact GELU
    orig = CLIPModel(cfg).eval()
    oc = _hf_to_open_clip(orig.state_dict())
    assert "visual.transformer.resblocks.1.attn.in_proj_weight" in oc and oc["visual.proj"].shape == (32, 16)
    conv = rm.open_clip_to_hf_clip(oc)
    back = CLIPModel(cfg).eval()
    missing, unexpected = back.load_state_dict(conv, strict=False)
    assert not unexpected and all(m.endswith("position_ids") for m in missing)
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    x = rm.preprocess(pixels, 32, 32)
    tok = _clip_tokenizer()(PROMPTS[:2], padding="max_length", max_length=16, return_tensors="pt")
    with torch.no_grad():
        e0 = orig.get_image_features(pixel_values=x).pooler_output, orig.get_text_features(**tok).pooler_output
        e1 = back.get_image_features(pixel_values=x).pooler_output, back.get_text_features(**tok).pooler_output
        assert torch.equal(e0[0], e1[0]) and torch.equal(e0[1], e1[1])
        ref_i, ref_t = _open_clip_reference(oc, x, tok.input_ids)
    torch.testing.assert_close(F.normalize(e1[0], dim=-1), ref_i, atol=1e-5, rtol=0)
    torch.testing.assert_close(F.normalize(e1[1], dim=-1), ref_t, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="unknown open_clip key"):
        rm.open_clip_to_hf_clip({"visual.trunk.blocks.0.weight": torch.zeros(1)})
    # the real loading path: an HPS-style checkpoint file {"state_dict": ...} with "module." prefixes
    path = tmp_path / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in oc.items()}, "epoch": 1}, path)
    r = rm.build_reward("hpsv21", source=str(path), processor_source=clip_dir, config=cfg)(pixels, PROMPTS[:2])
    assert r.shape == (2,) and r.dtype == torch.float32
    torch.testing.assert_close(r, (ref_i * ref_t).sum(-1), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------- ImageReward
def _tiny_blip_config():
    return BlipConfig(
        text_config=dict(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4,
                         max_position_embeddings=40, layer_norm_eps=1e-12, is_decoder=True, pad_token_id=0),
        vision_config=dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, layer_norm_eps=1e-6, hidden_act="gelu"))


def _hf_to_imagereward(sd):
    """Test-side inverse: ImageRewardModel keys -> ImageReward.pt keys (timm ViT, BLIP med BERT, mlp.layers)."""
    out = {"blip.vision_proj.weight": torch.zeros(2, 24), "blip.text_proj.weight": torch.zeros(2, 32),
           "blip.text_encoder.embeddings.position_ids": torch.arange(40)[None]}
    for k, v in sd.items():
        if k.startswith("vision."):
            n = (k[7:].replace("embeddings.class_embedding", "cls_token")
                 .replace("embeddings.position_embedding", "pos_embed")
                 .replace("embeddings.patch_embedding", "patch_embed.proj").replace("post_layernorm", "norm")
                 .replace("encoder.layers", "blocks").replace("layer_norm1", "norm1").replace("layer_norm2", "norm2")
                 .replace("self_attn.qkv", "attn.qkv").replace("self_attn.projection", "attn.proj"))
            out["blip.visual_encoder." + n] = v
        elif k.startswith("text."):
            if not k.endswith("position_ids"):
                out["blip.text_encoder." + k[5:]] = v
        else:
            out["mlp." + k[5:]] = v
    return out


def test_imagereward_converter_and_file_loading(tmp_path):
    torch.manual_seed(6)
    cfg = _tiny_blip_config()
    orig = rm.ImageRewardModel(cfg).eval()
    ir = _hf_to_imagereward(orig.state_dict())
    assert "blip.visual_encoder.blocks.1.attn.qkv.weight" in ir and "mlp.layers.7.weight" in ir
    assert "blip.text_encoder.encoder.layer.0.crossattention.self.key.weight" in ir
    torch.save(ir, tmp_path / "ImageReward.pt")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "cat", "dog", "on", "the", "moon"]
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(vocab=str(tmp_path / "bert" / "vocab.txt")).save_pretrained(tmp_path / "bert")
    pixels = torch.rand(3, 3, 40, 36, generator=torch.Generator().manual_seed(7))
    fn = rm.build_reward("imagereward", source=str(tmp_path), tokenizer_source=str(tmp_path / "bert"), config=cfg)
    r = fn(pixels, PROMPTS)
    assert r.shape == (3,) and r.dtype == torch.float32
    tok = BertTokenizer(vocab=str(tmp_path / "bert" / "vocab.txt"))
    t = tok(PROMPTS, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    assert (t.input_ids[:, 0] == 2).all()  # [CLS] first, as ImageReward's scorer feeds it
    with torch.no_grad():
        ref = orig(rm.preprocess(pixels, 32, 32), t.input_ids, t.attention_mask)
    torch.testing.assert_close(r, ref, atol=1e-5, rtol=0)
    single = torch.cat([fn(pixels[i:i + 1], PROMPTS[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(single, r, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="unknown ImageReward key"):
        rm.imagereward_to_hf({"blip.itm_head.weight": torch.zeros(1)})


# ------------------------------------------------------------------------------------------------- video
def test_video_motion_and_consistency(clip_dir):
    g = torch.Generator().manual_seed(8)
    frame = torch.rand(2, 3, 1, 48, 48, generator=g)
    static = frame.expand(-1, -1, 5, -1, -1)
    random_frames = torch.rand(2, 3, 5, 48, 48, generator=g)
    xs = torch.linspace(0, 6.28, 48)
    smooth = (0.5 + 0.4 * torch.sin(xs)[None, :] * torch.cos(xs)[:, None]).expand(2, 3, 48, 48)

    def moving(step):  # a smooth pattern translated by `step` pixels per frame
        return torch.stack([torch.roll(smooth, step * t, dims=-1) for t in range(5)], 2)
    motion = rm.build_reward("video_motion")
    torch.testing.assert_close(motion(static, ["a", "b"]), torch.zeros(2))
    slow, fast, rand = (motion(v, ["a", "b"]) for v in (moving(1), moving(4), random_frames))
    assert slow.dtype == torch.float32 and slow.shape == (2,)
    assert (0 < slow).all() and (slow < fast).all() and (fast < rand).all() and (rand < 1).all()
    torch.testing.assert_close(motion(frame[:, :, 0], ["a", "b"]), torch.zeros(2))  # an image has no motion
    cons = rm.build_reward("video_consistency", source=clip_dir)
    c_static, c_rand = cons(static, ["a", "b"]), cons(random_frames, ["a", "b"])
    assert c_static.shape == (2,) and c_static.dtype == torch.float32
    torch.testing.assert_close(c_static, torch.ones(2), atol=1e-5, rtol=0)
    assert (c_rand < c_static - 1e-4).all()
    vclip = rm.build_reward("video_clip_score", source=clip_dir)
    image_score = rm.build_reward("clip_score", source=clip_dir)(frame[:, :, 0], ["a", "b"])
    torch.testing.assert_close(vclip(static, ["a", "b"]), image_score, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------ registry, errors, laziness
def test_registry_env_var_source_and_offline_errors(clip_dir, monkeypatch):
    names = {"clip_score", "pickscore", "aesthetic", "hpsv21", "imagereward", "video_clip_score",
             "video_aesthetic", "video_consistency", "video_motion"}
    assert names <= set(REWARDS)
    monkeypatch.setenv("OTCA_CLIP", clip_dir)  # a registered reward reads its local folder from $OTCA_CLIP
    fns = build_rewards(["clip_score", "video_motion"])
    out = reward(fns, torch.rand(2, 3, 4, 32, 32), ["a", "b"])
    assert all(v.shape == (2,) for v in out.values())

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    monkeypatch.setenv("OTCA_CLIP", "otca-test/no-such-clip")
    with pytest.raises(RuntimeError) as e:
        REWARDS["clip_score"](torch.device("cpu"))
    assert isinstance(e.value, rm.RewardModelUnavailable)
    msg = str(e.value)
    assert "otca-test/no-such-clip" in msg and "--local-dir" in msg and "OTCA_CLIP" in msg and "source=DIR" in msg
    with pytest.raises(rm.RewardModelUnavailable, match="otca-test/none HPS.pt --local-dir"):
        rm.build_reward("hpsv21", source="otca-test/none:HPS.pt")
    with pytest.raises(rm.RewardModelUnavailable, match="local path"):
        rm.build_reward("aesthetic", source="/no/such/folder/head.pth", clip_source=clip_dir)


def test_importing_the_library_loads_no_model():
    code = ("import sys, otca_lib.reward_models as m; t = 'transformers' in sys.modules; "
            "import otca_lib.rewards as r; assert 'video_motion' in r.REWARDS and not m._BACKBONES; print(t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"  # reward_models imports transformers only inside its factories
