"""Models of the accuracy benchmark that no source names (factories for ``file.py:fn``).

:data:`BROAD` is the broad zoo (``python benchmarks/accuracy.py --zoo broad``): architectures
chosen by family, each small enough that the whole zoo runs in minutes on two cores. Rows whose
model takes more than one image tensor name an input function of this module.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def mlp() -> nn.Module:
    """A 4-layer MLP on flattened 3x64x64 images (12,288 features) with 1000 classes."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(3 * 64 * 64, 2048),
        nn.ReLU(),
        nn.Linear(2048, 2048),
        nn.GELU(),
        nn.Linear(2048, 1024),
        nn.ReLU(),
        nn.Linear(1024, 1000),
    )


# -- vision --------------------------------------------------------------------------------


def resnext_small() -> nn.Module:
    """torchvision's ResNeXt (bottlenecks with 32 groups of width 4), one block per stage."""
    from torchvision.models.resnet import Bottleneck, ResNet

    return ResNet(Bottleneck, [1, 1, 1, 1], groups=32, width_per_group=4)


def convnext_small() -> nn.Module:
    """torchvision's ConvNeXt (LayerNorm2d, layer scale, stochastic depth 0.1), widths
    48-96-192, two blocks per stage."""
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    stages = [CNBlockConfig(48, 96, 2), CNBlockConfig(96, 192, 2), CNBlockConfig(192, None, 2)]
    return ConvNeXt(stages, stochastic_depth_prob=0.1, num_classes=100)


def swin_small() -> nn.Module:
    """torchvision's Swin Transformer (shifted 4x4 windows, patch merging), embed dim 48,
    depths 2-2-2."""
    from torchvision.models.swin_transformer import SwinTransformer

    return SwinTransformer(
        patch_size=[4, 4],
        embed_dim=48,
        depths=[2, 2, 2],
        num_heads=[3, 6, 12],
        window_size=[4, 4],
        stochastic_depth_prob=0.1,
        num_classes=100,
    )


def tiny_vit() -> nn.Module:
    """torchvision's ViT with 4 layers of width 128 on 32x32 images in 4x4 patches."""
    from torchvision.models import VisionTransformer

    return VisionTransformer(
        image_size=32, patch_size=4, num_layers=4, num_heads=4, hidden_dim=128, mlp_dim=512
    )


class _ConvNeXtBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7, LayerNorm over channels (channels-last), MLP with GELU,
    layer scale, residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1, self.pw2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.pw2(F.gelu(self.pw1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


def convnext_small_blocks() -> nn.Module:
    """A 3-stage ConvNeXt (widths 32-64-128, two blocks each) with 10 classes."""
    layers: list[nn.Module] = [nn.Conv2d(3, 32, 4, stride=4)]
    for i, dim in enumerate((32, 64, 128)):
        if i:
            layers.append(nn.Conv2d(dim // 2, dim, 2, stride=2))
        layers += [_ConvNeXtBlock(dim), _ConvNeXtBlock(dim)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))


def lraspp() -> nn.Module:
    """torchvision's LR-ASPP segmentation head on MobileNetV3-Large (21 classes)."""
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    return lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)


def deeplab() -> nn.Module:
    """torchvision's DeepLabV3 on MobileNetV3-Large (ASPP, dilated convolutions)."""
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    return deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None)


class _DetectionHead(nn.Module):
    """A RetinaNet/FCOS-style dense head: a ResNet-18 trunk, a 3-level feature pyramid and
    shared class, box and centerness towers with GroupNorm."""

    def __init__(self, classes: int = 20, dim: int = 64) -> None:
        super().__init__()
        from torchvision.models import resnet18

        r = resnet18(weights=None)
        self.stem = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1)
        self.stages = nn.ModuleList([r.layer2, r.layer3, r.layer4])
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in (128, 256, 512))
        self.smooth = nn.ModuleList(nn.Conv2d(dim, dim, 3, padding=1) for _ in range(3))

        def tower() -> nn.Sequential:
            return nn.Sequential(
                *[
                    m
                    for _ in range(2)
                    for m in (nn.Conv2d(dim, dim, 3, padding=1), nn.GroupNorm(16, dim), nn.ReLU())
                ]
            )

        self.cls_tower, self.box_tower = tower(), tower()
        self.cls = nn.Conv2d(dim, classes, 3, padding=1)
        self.box = nn.Conv2d(dim, 4, 3, padding=1)
        self.ctr = nn.Conv2d(dim, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, y = [], self.stem(x)
        for stage in self.stages:
            y = stage(y)
            feats.append(y)
        levels = [lat(f) for lat, f in zip(self.lateral, feats, strict=True)]
        for i in (1, 0):
            levels[i] = levels[i] + F.interpolate(levels[i + 1], size=levels[i].shape[-2:])
        outs = []
        for s, p in zip(self.smooth, levels, strict=True):
            p = s(p)
            c, b = self.cls_tower(p), self.box_tower(p)
            outs.append(torch.cat([self.cls(c), F.relu(self.box(b)), self.ctr(b)], 1).flatten(2))
        return torch.cat(outs, 2)


def detection_head() -> nn.Module:
    return _DetectionHead()


class _UNet(nn.Module):
    """U-Net: double 3x3 conv blocks, max-pool down, transposed-conv (or bilinear) up,
    concatenated skip connections; BatchNorm or GroupNorm/InstanceNorm."""

    def __init__(self, widths: tuple[int, ...], norm: str, bilinear: bool) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            def n(c: int) -> nn.Module:
                if norm == "batch":
                    return nn.BatchNorm2d(c)
                if norm == "instance":
                    return nn.InstanceNorm2d(c, affine=True)
                return nn.GroupNorm(8, c)

            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                n(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                n(cout),
                nn.ReLU(inplace=True),
            )

        self.downs = nn.ModuleList()
        cin = 3
        for w in widths:
            self.downs.append(block(cin, w))
            cin = w
        self.bottom = block(widths[-1], 2 * widths[-1])
        self.ups, self.dec = nn.ModuleList(), nn.ModuleList()
        cin = 2 * widths[-1]
        for w in reversed(widths):
            self.ups.append(
                nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(cin, w, 1))
                if bilinear
                else nn.ConvTranspose2d(cin, w, 2, stride=2)
            )
            self.dec.append(block(2 * w, w))
            cin = w
        self.out = nn.Conv2d(widths[0], 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for up, dec, skip in zip(self.ups, self.dec, reversed(skips), strict=True):
            x = dec(torch.cat([up(x), skip], 1))
        return self.out(x)


def unet() -> nn.Module:
    """U-Net (16-32-64-128, BatchNorm, transposed-conv up)."""
    return _UNet((16, 32, 64, 128), "batch", bilinear=False)


def unet_bilinear_gn() -> nn.Module:
    """U-Net (16-32-64, GroupNorm, bilinear up)."""
    return _UNet((16, 32, 64), "group", bilinear=True)


def unet_instance_norm() -> nn.Module:
    """U-Net (16-32-64, InstanceNorm, transposed-conv up)."""
    return _UNet((16, 32, 64), "instance", bilinear=False)


class _SpectralConv(nn.Module):
    """Fourier neural operator layer: rfft2, a complex weight on the lowest modes, irfft2."""

    def __init__(self, dim: int, modes: int) -> None:
        super().__init__()
        self.modes = modes
        scale = 1 / dim
        self.w = nn.Parameter(scale * torch.randn(dim, dim, modes, modes, dtype=torch.cfloat))
        self.skip = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.fft.rfft2(x)
        m = self.modes
        out = torch.zeros_like(f)
        out[:, :, :m, :m] = torch.einsum("bixy,ioxy->boxy", f[:, :, :m, :m], self.w)
        return F.gelu(torch.fft.irfft2(out, s=x.shape[-2:]) + self.skip(x))


def fno() -> nn.Module:
    """A 4-layer Fourier neural operator (width 32, 8 modes) on 3-channel 32x32 fields."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 1), *[_SpectralConv(32, 8) for _ in range(4)], nn.Conv2d(32, 1, 1)
    )


class _MixerBlock(nn.Module):
    def __init__(self, tokens: int, dim: int) -> None:
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.tok = nn.Sequential(
            nn.Linear(tokens, 2 * tokens), nn.GELU(), nn.Linear(2 * tokens, tokens)
        )
        self.ch = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.tok(self.n1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.ch(self.n2(x))


def mlp_mixer() -> nn.Module:
    """MLP-Mixer: 4x4 patches of 32x32 images, 4 blocks of width 128."""
    return nn.Sequential(
        nn.Conv2d(3, 128, 4, stride=4),
        nn.Flatten(2),
        _Transpose(),
        *[_MixerBlock(64, 128) for _ in range(4)],
        nn.LayerNorm(128),
        _MeanTokens(),
        nn.Linear(128, 10),
    )


class _Transpose(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class _MeanTokens(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1)


# -- sequences: recurrent, transformers, audio ----------------------------------------------

VOCAB = 2000


class _RecurrentTagger(nn.Module):
    """Embedding, a recurrent stack (batch-first), per-token classifier."""

    def __init__(self, cell: str, layers: int, bidirectional: bool, **kw: Any) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 64)
        self.rnn = getattr(nn, cell)(
            64, 128, num_layers=layers, bidirectional=bidirectional, batch_first=True, **kw
        )
        self.head = nn.Linear(128 * (2 if bidirectional else 1), 17)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.embed(tokens))[0])


def lstm_tagger() -> nn.Module:
    """2-layer bidirectional LSTM tagger (oneDNN on CPU)."""
    return _RecurrentTagger("LSTM", 2, True)


def lstm_lm() -> nn.Module:
    """3-layer LSTM language model with dropout and a tied vocabulary projection."""

    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(VOCAB, 128)
            self.rnn = nn.LSTM(128, 128, num_layers=3, dropout=0.1, batch_first=True)
            self.out = nn.Linear(128, VOCAB)
            self.out.weight = self.embed.weight

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.out(self.rnn(self.embed(tokens))[0])

    return LM()


def gru_tagger() -> nn.Module:
    """2-layer bidirectional GRU tagger."""
    return _RecurrentTagger("GRU", 2, True)


def gru_encoder() -> nn.Module:
    """1-layer GRU sentence classifier on the last state."""

    class Enc(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(VOCAB, 64)
            self.rnn = nn.GRU(64, 256, batch_first=True)
            self.out = nn.Linear(256, 4)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.out(self.rnn(self.embed(tokens))[1][-1])

    return Enc()


def rnn_tanh() -> nn.Module:
    """2-layer vanilla (tanh) RNN tagger."""
    return _RecurrentTagger("RNN", 2, False, nonlinearity="tanh")


def lstm_packed() -> nn.Module:
    """2-layer bidirectional LSTM tagger over packed sequences of decreasing lengths (a sorted
    bucket: ``pack_padded_sequence`` / ``pad_packed_sequence``; PyTorch's native packed path
    on CPU, not oneDNN)."""

    class Packed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(VOCAB, 64, padding_idx=0)
            self.rnn = nn.LSTM(64, 128, num_layers=2, bidirectional=True, batch_first=True)
            self.head = nn.Linear(256, 17)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            batch, steps = tokens.shape
            lengths = [steps - steps * i // batch for i in range(batch)]
            packed = nn.utils.rnn.pack_padded_sequence(
                self.embed(tokens), lengths, batch_first=True
            )
            out, _ = nn.utils.rnn.pad_packed_sequence(
                self.rnn(packed)[0], batch_first=True, total_length=steps
            )
            return self.head(out)

    return Packed()


def tokens_8x24() -> tuple[torch.Tensor]:
    """A batch of 8 token sequences of length 24."""
    return (torch.randint(0, VOCAB, (8, 24)),)


def tokens_8x32() -> tuple[torch.Tensor]:
    """A batch of 8 token sequences of length 32."""
    return (torch.randint(0, VOCAB, (8, 32)),)


def _t5_config() -> Any:
    from transformers import T5Config

    return T5Config(
        vocab_size=VOCAB,
        d_model=128,
        d_kv=32,
        d_ff=512,
        num_layers=3,
        num_decoder_layers=3,
        num_heads=4,
        use_cache=False,
        dropout_rate=0.0,
    )


def t5_small() -> nn.Module:
    """T5 (3+3 layers, d_model 128): relative position bias, RMS norm, cross-attention."""
    from transformers import T5ForConditionalGeneration

    return T5ForConditionalGeneration(_t5_config())


def bart_tiny() -> nn.Module:
    """BART (2+2 layers, d_model 128): learned positions, LayerNorm, GELU."""
    from transformers import BartConfig, BartForConditionalGeneration

    return BartForConditionalGeneration(
        BartConfig(
            vocab_size=VOCAB,
            d_model=128,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=512,
            decoder_ffn_dim=512,
            max_position_embeddings=128,
            use_cache=False,
            dropout=0.0,
        )
    )


def seq2seq_tokens() -> dict[str, torch.Tensor]:
    """4 source sequences of 32 tokens, 4 target sequences of 16."""
    return {
        "input_ids": torch.randint(0, VOCAB, (4, 32)),
        "decoder_input_ids": torch.randint(0, VOCAB, (4, 16)),
    }


def torch_transformer() -> nn.Module:
    """``nn.Transformer`` (2+2 layers, d_model 128) on embedded tokens, a causal target mask."""

    class Seq2Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(VOCAB, 128)
            self.core = nn.Transformer(128, 4, 2, 2, 512, dropout=0.1, batch_first=True)
            self.out = nn.Linear(128, VOCAB)

        def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
            mask = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1])
            return self.out(self.core(self.embed(src), self.embed(tgt), tgt_mask=mask))

    return Seq2Seq()


def src_tgt_tokens() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randint(0, VOCAB, (4, 32)), torch.randint(0, VOCAB, (4, 16))


def m5_audio() -> nn.Module:
    """M5 (Dai et al. 2017): 1-D convolutions on raw 8 kHz audio, BatchNorm1d, max pooling."""
    layers: list[nn.Module] = []
    cin = 1
    for i, cout in enumerate((32, 32, 64, 64)):
        k, s = (80, 16) if i == 0 else (3, 1)
        layers += [
            nn.Conv1d(cin, cout, k, stride=s),
            nn.BatchNorm1d(cout),
            nn.ReLU(),
            nn.MaxPool1d(4),
        ]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(64, 35))


def tcn() -> nn.Module:
    """Temporal convolutional network: dilated causal 1-D convolutions, weight-free residuals."""

    class Block(nn.Module):
        def __init__(self, dim: int, dilation: int) -> None:
            super().__init__()
            self.pad = 2 * dilation
            self.c1 = nn.Conv1d(dim, dim, 3, dilation=dilation)
            self.c2 = nn.Conv1d(dim, dim, 3, dilation=dilation)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.relu(self.c1(F.pad(x, (self.pad, 0))))
            return F.relu(x + self.c2(F.pad(y, (self.pad, 0))))

    return nn.Sequential(
        nn.Conv1d(40, 64, 1), *[Block(64, 2**i) for i in range(5)], nn.Conv1d(64, 10, 1)
    )


def wav2letter() -> nn.Module:
    """Wav2Letter-style 1-D conv stack on 40 mel features, ReLU, no pooling."""
    spec = [
        (40, 128, 11, 2),
        (128, 128, 7, 1),
        (128, 128, 7, 1),
        (128, 256, 11, 1),
        (256, 256, 1, 1),
    ]
    layers: list[nn.Module] = []
    for cin, cout, k, s in spec:
        layers += [nn.Conv1d(cin, cout, k, stride=s, padding=k // 2), nn.ReLU()]
    return nn.Sequential(*layers, nn.Conv1d(256, 29, 1))


# -- recommendation, graphs, mixture of experts ---------------------------------------------

ITEMS, DENSE, BAG = 20_000, 13, 10


class _DLRM(nn.Module):
    """DLRM-style: dense MLP, 8 sum-pooled ``EmbeddingBag`` tables (offsets), pairwise dot
    interactions, top MLP."""

    def __init__(self, tables: int = 8, dim: int = 32, mode: str = "sum") -> None:
        super().__init__()
        self.bottom = nn.Sequential(nn.Linear(DENSE, 128), nn.ReLU(), nn.Linear(128, dim))
        self.tables = nn.ModuleList(nn.EmbeddingBag(ITEMS, dim, mode=mode) for _ in range(tables))
        n = tables + 1
        self.top = nn.Sequential(
            nn.Linear(n * (n - 1) // 2 + dim, 128), nn.ReLU(), nn.Linear(128, 1)
        )

    def forward(
        self, dense: torch.Tensor, ids: torch.Tensor, offsets: torch.Tensor
    ) -> torch.Tensor:
        x = self.bottom(dense)
        feats = [x, *(t(ids[i], offsets) for i, t in enumerate(self.tables))]
        z = torch.stack(feats, 1)
        inter = torch.bmm(z, z.transpose(1, 2))
        i, j = torch.triu_indices(z.shape[1], z.shape[1], 1)
        return self.top(torch.cat([x, inter[:, i, j]], 1))


def dlrm() -> nn.Module:
    return _DLRM()


def dlrm_mean_bags() -> nn.Module:
    """DLRM with mean-pooled bags."""
    return _DLRM(tables=4, dim=64, mode="mean")


def recsys_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """64 samples: dense features, 10 ids per bag for each of up to 8 tables, offsets."""
    batch = 64
    return (
        torch.randn(batch, DENSE),
        torch.randint(0, ITEMS, (8, batch * BAG)),
        torch.arange(0, batch * BAG, BAG),
    )


NODES, EDGES, FEATS = 500, 4000, 64


class _GraphConv(nn.Module):
    """Message passing with ``index_select`` gathers and ``index_add_`` scatters: sum (GCN,
    symmetric degree norm) or mean (GraphSAGE) aggregation."""

    def __init__(self, cin: int, cout: int, mean: bool) -> None:
        super().__init__()
        self.lin = nn.Linear(cin, cout)
        self.root = nn.Linear(cin, cout) if mean else None

    def forward(self, x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        src, dst = edges
        h = self.lin(x)
        msg = h.index_select(0, src)
        out = torch.zeros_like(h).index_add_(0, dst, msg)
        deg = torch.zeros(x.shape[0]).scatter_add_(0, dst, torch.ones(dst.shape[0]))
        if self.root is None:
            return F.relu(out / deg.clamp(min=1).sqrt().unsqueeze(1))
        return F.relu(out / deg.clamp(min=1).unsqueeze(1) + self.root(x))


class _GNN(nn.Module):
    def __init__(self, mean: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [_GraphConv(FEATS, 128, mean), _GraphConv(128, 128, mean), _GraphConv(128, 16, mean)]
        )

    def forward(self, x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, edges)
        return x


def gcn() -> nn.Module:
    """3-layer GCN (sum aggregation, degree-normalised)."""
    return _GNN(mean=False)


def graphsage() -> nn.Module:
    """3-layer GraphSAGE (mean aggregation, root weight)."""
    return _GNN(mean=True)


def graph_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """A random graph: 500 nodes with 64 features, 4,000 directed edges."""
    return torch.randn(NODES, FEATS), torch.randint(0, NODES, (2, EDGES))


class _SwitchFFN(nn.Module):
    """Mixture-of-experts feed-forward layer with top-1 routing and a fixed expert capacity,
    dispatched and combined with one-hot tensors (Switch Transformer, Fedus et al. 2021):
    shapes do not depend on the routing."""

    def __init__(self, dim: int, experts: int, capacity: float) -> None:
        super().__init__()
        self.experts, self.capacity = experts, capacity
        self.gate = nn.Linear(dim, experts, bias=False)
        self.w1 = nn.Parameter(torch.randn(experts, dim, 4 * dim) / math.sqrt(dim))
        self.w2 = nn.Parameter(torch.randn(experts, 4 * dim, dim) / math.sqrt(4 * dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        tokens = x.reshape(-1, d)
        cap = int(self.capacity * tokens.shape[0] / self.experts)
        probs = self.gate(tokens).softmax(-1)
        gate, idx = probs.max(-1)
        onehot = F.one_hot(idx, self.experts).float()
        pos = (onehot.cumsum(0) - 1) * onehot  # position of each token in its expert's queue
        keep = onehot * (pos < cap).float()
        dispatch = keep.unsqueeze(-1) * F.one_hot(pos.long().clamp(max=cap - 1), cap).float()
        expert_in = torch.einsum("tec,td->ecd", dispatch, tokens)
        h = torch.bmm(F.gelu(torch.bmm(expert_in, self.w1)), self.w2)
        out = torch.einsum("tec,ecd->td", dispatch * gate[:, None, None], h)
        return out.reshape(b, s, d)


def moe_transformer() -> nn.Module:
    """4-layer transformer encoder whose feed-forward layers are 8-expert Switch layers."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.n1, self.n2 = nn.LayerNorm(128), nn.LayerNorm(128)
            self.attn = nn.MultiheadAttention(128, 4, batch_first=True)
            self.moe = _SwitchFFN(128, 8, 1.25)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.n1(x)
            x = x + self.attn(h, h, h, need_weights=False)[0]
            return x + self.moe(self.n2(x))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(VOCAB, 128)
            self.blocks = nn.Sequential(*[Block() for _ in range(4)])
            self.out = nn.Linear(128, VOCAB)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.out(self.blocks(self.embed(tokens)))

    return Net()


#: The broad zoo: (label, model, family, shape arguments, inputs function or None).
#: Image rows without an inputs function take ``batch`` images of ``input_shape``.
BROAD: list[tuple[str, str, str, dict[str, Any], str | None]] = [
    # classic and modern CNNs
    ("resnet18", "resnet18", "residual CNN", {"batch": 2, "input_shape": (3, 32, 32)}, None),
    (
        "resnext_small",
        "zoo.py:resnext_small",
        "grouped-conv CNN",
        {"batch": 2, "input_shape": (3, 32, 32)},
        None,
    ),
    (
        "regnet_y_400mf",
        "regnet_y_400mf",
        "RegNet (SE, groups)",
        {"batch": 2, "input_shape": (3, 32, 32)},
        None,
    ),
    ("densenet121", "densenet121", "dense CNN", {"batch": 2, "input_shape": (3, 32, 32)}, None),
    ("googlenet", "googlenet", "inception CNN", {"batch": 2, "input_shape": (3, 64, 64)}, None),
    (
        "mobilenet_v3_small",
        "mobilenet_v3_small",
        "depthwise CNN + SE",
        {"batch": 2, "input_shape": (3, 32, 32)},
        None,
    ),
    (
        "shufflenet_v2",
        "shufflenet_v2_x0_5",
        "channel-shuffle CNN",
        {"batch": 2, "input_shape": (3, 32, 32)},
        None,
    ),
    ("mnasnet0_5", "mnasnet0_5", "NAS CNN", {"batch": 2, "input_shape": (3, 32, 32)}, None),
    (
        "efficientnet_b0",
        "efficientnet_b0",
        "EfficientNet",
        {"batch": 2, "input_shape": (3, 64, 64)},
        None,
    ),
    (
        "convnext_small",
        "zoo.py:convnext_small",
        "ConvNeXt",
        {"batch": 2, "input_shape": (3, 32, 32)},
        None,
    ),
    (
        "convnext_blocks",
        "zoo.py:convnext_small_blocks",
        "ConvNeXt blocks",
        {"batch": 2, "input_shape": (3, 32, 32)},
        None,
    ),
    ("mlp_mixer", "zoo.py:mlp_mixer", "MLP-Mixer", {"batch": 2, "input_shape": (3, 32, 32)}, None),
    # vision transformers
    (
        "vit_tiny",
        "zoo.py:tiny_vit",
        "vision transformer",
        {"batch": 2, "input_shape": (3, 32, 32)},
        None,
    ),
    (
        "swin_small",
        "zoo.py:swin_small",
        "windowed vision transformer",
        {"batch": 2, "input_shape": (3, 32, 32)},
        None,
    ),
    # segmentation, detection, U-Nets, operators
    (
        "lraspp",
        "zoo.py:lraspp",
        "segmentation head",
        {"batch": 2, "input_shape": (3, 64, 64)},
        None,
    ),
    (
        "deeplabv3",
        "zoo.py:deeplab",
        "segmentation (ASPP)",
        {"batch": 2, "input_shape": (3, 64, 64)},
        None,
    ),
    (
        "detection_head",
        "zoo.py:detection_head",
        "detection head (FPN)",
        {"batch": 2, "input_shape": (3, 64, 64)},
        None,
    ),
    ("unet", "zoo.py:unet", "U-Net (BatchNorm)", {"batch": 2, "input_shape": (3, 32, 32)}, None),
    (
        "unet_gn_bilinear",
        "zoo.py:unet_bilinear_gn",
        "U-Net (GroupNorm)",
        {"batch": 2, "input_shape": (3, 32, 32)},
        None,
    ),
    (
        "unet_instance_norm",
        "zoo.py:unet_instance_norm",
        "U-Net (InstanceNorm)",
        {"batch": 2, "input_shape": (3, 32, 32)},
        None,
    ),
    ("fno", "zoo.py:fno", "Fourier operator (FFT)", {"batch": 2, "input_shape": (3, 32, 32)}, None),
    # recurrent
    ("lstm_tagger", "zoo.py:lstm_tagger", "bi-LSTM tagger", {"batch": 8}, "tokens_8x24"),
    ("lstm_lm", "zoo.py:lstm_lm", "LSTM language model", {"batch": 8}, "tokens_8x32"),
    ("gru_tagger", "zoo.py:gru_tagger", "bi-GRU tagger", {"batch": 8}, "tokens_8x24"),
    ("gru_encoder", "zoo.py:gru_encoder", "GRU classifier", {"batch": 8}, "tokens_8x24"),
    ("rnn_tanh", "zoo.py:rnn_tanh", "vanilla RNN", {"batch": 8}, "tokens_8x24"),
    (
        "lstm_packed",
        "zoo.py:lstm_packed",
        "bi-LSTM, packed sequences",
        {"batch": 8},
        "tokens_8x24",
    ),
    # transformers
    ("t5_small", "zoo.py:t5_small", "encoder-decoder (T5)", {"batch": 4}, "seq2seq_tokens"),
    ("bart_tiny", "zoo.py:bart_tiny", "encoder-decoder (BART)", {"batch": 4}, "seq2seq_tokens"),
    (
        "nn_transformer",
        "zoo.py:torch_transformer",
        "encoder-decoder (nn.Transformer)",
        {"batch": 8},
        "src_tgt_tokens",
    ),
    ("moe", "zoo.py:moe_transformer", "mixture of experts", {"batch": 8}, "tokens_8x32"),
    # audio
    (
        "m5",
        "zoo.py:m5_audio",
        "1-D conv audio (raw)",
        {"batch": 4, "input_shape": (1, 8000)},
        None,
    ),
    ("tcn", "zoo.py:tcn", "dilated causal 1-D conv", {"batch": 4, "input_shape": (40, 200)}, None),
    (
        "wav2letter",
        "zoo.py:wav2letter",
        "1-D conv speech",
        {"batch": 4, "input_shape": (40, 200)},
        None,
    ),
    # recommendation, graphs
    ("dlrm", "zoo.py:dlrm", "recommender (EmbeddingBag sum)", {"batch": 64}, "recsys_inputs"),
    (
        "dlrm_mean",
        "zoo.py:dlrm_mean_bags",
        "recommender (EmbeddingBag mean)",
        {"batch": 64},
        "recsys_inputs",
    ),
    ("gcn", "zoo.py:gcn", "graph network (scatter)", {"batch": 1}, "graph_inputs"),
    ("graphsage", "zoo.py:graphsage", "graph network (mean scatter)", {"batch": 1}, "graph_inputs"),
]
