"""TPFR weights of nnaisense/conditional-style-transfer: the released ``200_net_G.pth`` (one
``ResnetGeneratorResidual``: encoder, global style branch, bidirectional peer layer, main and auxiliary decoders) and
``200_net_D.pth`` (``NLayerMultiDiscriminatorNoisy``).

    python -m gan_translate import tpfr 200_net_G.pth --name tpfr_official            # + --discriminator 200_net_D.pth

Their generator is split here into our networks E, peer, G and G_aux (``_RULES``); the layer order inside each part is
the authors', so only the prefixes change. The peer layer scores with two Conv1d(1, 1, k) per stage, which are our
Linear(k, 1) scorers with the same numbers. The run uses the authors' peers (every style image of the batch) and
k = 5 (their test.py). Their test forces eval mode: test.py here needs ``--eval`` for the same outputs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from gan_translate.errors import UserError
from gan_translate.importers.common import StateDict, build_options, load_into, read_state_dict, resembles, write_run
from gan_translate.models import create_model

_ATTENTION = {"cont": "style_attention", "sty": "content_attention"}  # their stage names -> ours
# (their key pattern, our network, our key); first match wins, so the longer prefixes come first.
_RULES: tuple[tuple[str, str, str], ...] = (
    (r"model_enc_pre\.(.*)", "E", r"pre.\1"),
    (r"model_enc_global\.(.*)", "E", r"global_branch.\1"),
    (r"model_enc\.(\d+)\.conv_block\.(.*)", "E", r"body.\1.body.\2"),
    (r"model_enc\.(.*)", "E", r"body.\1"),
    (r"model_peer_reg\.0\.transf_att_(cont|sty)\.(.*)", "peer", r"{att}.mlp.\2"),
    (r"model_peer_reg\.0\.conv_att1_(cont|sty)\.(.*)", "peer", r"{att}.score_query.\2"),
    (r"model_peer_reg\.0\.conv_att2_(cont|sty)\.(.*)", "peer", r"{att}.score_peer.\2"),
    (r"model_merge_aux\.(.*)", "G_aux", r"merge.\1"),
    (r"model_dec_aux\.(\d+)\.conv_block\.(.*)", "G_aux", r"body.\1.body.\2"),
    (r"model_dec_aux\.(.*)", "G_aux", r"body.\1"),
    (r"model_merge\.(.*)", "G", r"merge.\1"),
    (r"model_dec\.(\d+)\.conv_block\.(.*)", "G", r"body.\1.body.\2"),
    (r"model_dec\.(.*)", "G", r"body.\1"),
)


def split_generator(state: StateDict, source: str) -> dict[str, StateDict]:
    """Their generator's tensors as the state dicts of our E, peer, G and G_aux."""
    parts: dict[str, StateDict] = {"E": {}, "peer": {}, "G": {}, "G_aux": {}}
    unknown = []
    for key, tensor in state.items():
        for pattern, net, target in _RULES:
            match = re.fullmatch(pattern, key)
            if match is None:
                continue
            if net == "peer":
                ours = match.expand(target.replace("{att}", _ATTENTION[match.group(1)]))
                if ".score_" in ours and ours.endswith(".weight"):
                    tensor = tensor.reshape(1, -1)  # Conv1d(1, 1, k) weight (1, 1, k) -> Linear(k, 1) (1, k)
            else:
                ours = match.expand(target)
            parts[net][ours] = tensor
            break
        else:
            unknown.append(key)
    if unknown or not parts["E"]:
        raise UserError(f"{source} is not a TPFR generator (ResnetGeneratorResidual): unexpected "
                        f"{', '.join(repr(k) for k in unknown[:3]) or 'keys'}; it looks like a {resembles(state)}")
    if not parts["peer"]:
        raise UserError(f"{source}: no bidirectional peer layer (model_peer_reg.0.transf_att_sty.*): only "
                        "--peer_reg bidir, the released model, is supported")
    return parts


def infer_options(state: StateDict, source: str) -> dict:
    """ngf, channels, residual blocks and the global branch from the generator's keys."""
    first = state.get("model_enc_pre.1.weight")
    if first is None:
        raise UserError(f"{source} is not a TPFR generator (no 'model_enc_pre.1.weight'); it looks like a "
                        f"{resembles(state)}")
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"model_enc\.(\d+)\.conv_block\.", k))}
    if any(k.startswith("model_enc.") and k.endswith("conv_block.6.weight") and state[k].dim() == 4 for k in state):
        raise UserError(f"{source}: residual blocks with dropout (trained without --no_dropout) are not supported")
    decoder = [int(m.group(1)) for k, v in state.items()
               if (m := re.fullmatch(r"model_dec\.(\d+)\.weight", k)) and v.dim() == 4]
    output_nc = state[f"model_dec.{max(decoder)}.weight"].shape[0] if decoder else first.shape[1]
    return {"ngf": first.shape[0], "input_nc": first.shape[1], "output_nc": output_nc, "n_blocks": len(blocks),
            "no_global_style": not any(k.startswith("model_enc_global.") for k in state)}


def _parser():
    from gan_translate.importers import ImportParser

    p = ImportParser(prog="python -m gan_translate import tpfr",
                     description="Import TPFR's generator (and discriminator) of nnaisense/conditional-style-transfer.")
    p.add_argument("generator", help="200_net_G.pth")
    p.add_argument("--discriminator", default="", help="200_net_D.pth (needed only to fine-tune)")
    p.add_argument("--knn", type=int, default=5, help="peer pixels per latent pixel (their test.py: 5)")
    return p


def import_tpfr(argv: Sequence[str]) -> Path:
    args = _parser().parse_args(list(argv))
    g_path = Path(args.generator).expanduser()
    state = read_state_dict(g_path, "TPFR generator")
    values = infer_options(state, str(g_path))
    parts = split_generator(state, str(g_path))
    d_state = read_state_dict(args.discriminator, "option --discriminator") if args.discriminator else None
    if d_state is not None:
        first = d_state.get("model_pred.0.weight")
        if first is None:
            raise UserError(f"option --discriminator: {args.discriminator} is not a TPFR discriminator (no "
                            f"'model_pred.0.weight'); it looks like a {resembles(d_state)}")
        values["ndf"] = first.shape[0]
    values.update(name=args.name, checkpoints_dir=args.checkpoints_dir, knn=args.knn, peers="batch")
    options = build_options("tpfr", values)
    model = create_model(options, training=True)
    nets = {name: load_into(model.nets[name], part, source=str(g_path), layout=f"TPFR {name} (ngf {options.ngf}, "
                            f"{options.n_blocks} blocks)") for name, part in parts.items()}
    if d_state is not None:
        renamed = {re.sub(r"^model_pred\.", "net.model.", k): v for k, v in d_state.items()}
        nets["D"] = load_into(model.nets["D"], renamed, source=args.discriminator,
                              layout=f"TPFR discriminator (ndf {options.ndf})")
    complete = set(nets) == set(model.nets)
    run = write_run(options, nets, source=str(g_path), fine_tune=complete,
                    reason="" if complete else "no discriminator was imported (pass --discriminator 200_net_D.pth)")
    print(f"imported TPFR {', '.join(sorted(nets))} from {g_path.name}: ngf {options.ngf}, {options.n_blocks} blocks, "
          f"k {options.knn}, peers from every style image of the batch -> {run} (translate with --eval, as their "
          "test.py)")
    return run
