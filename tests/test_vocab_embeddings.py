"""hanpack.vocab.resize_embeddings on transformers models: new rows are the mean of the
base tokenizer's sub-token rows, input and output embeddings, base rows untouched."""

from __future__ import annotations

import pytest

from hanpack.exceptions import InvalidArgumentError
from hanpack.vocab import base_token_ids, extend, resize_embeddings

from conftest import SHARED, require_shared

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")

STORIES = SHARED / "models" / "stories260k"


def tiny_llama(vocab: int, tied: bool):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=tied)
    return transformers.LlamaForCausalLM(cfg)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_new_rows_are_the_mean_of_base_sub_tokens(trained_models, tied):
    base = trained_models["bpe_bytefallback"]
    ext = extend(base, ["越来越", "天气很好", "▁中文"])
    n = spm.SentencePieceProcessor(model_file=str(base)).get_piece_size()
    model = tiny_llama(n, tied)
    before_in = model.get_input_embeddings().weight.detach().clone()
    before_out = model.get_output_embeddings().weight.detach().clone()
    resize_embeddings(model, base, ext)
    w_in, w_out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert w_in.shape[0] == w_out.shape[0] == ext.vocab_size
    assert torch.equal(w_in[:n], before_in) and torch.equal(w_out[:n], before_out)
    sp = spm.SentencePieceProcessor(model_file=str(base))
    for a, parts in zip(ext.added, base_token_ids(base, [a.piece for a in ext.added])):
        assert sp.decode(parts) == a.piece.replace("\u2581", " ").strip()
        assert torch.allclose(w_in[a.id], before_in[parts].mean(dim=0))
        assert torch.allclose(w_out[a.id], before_out[parts].mean(dim=0))
    assert (w_in.data_ptr() == w_out.data_ptr()) == tied


def test_base_token_ids_have_no_dummy_prefix(trained_models):
    base = trained_models["bpe_bytefallback"]
    sp = spm.SentencePieceProcessor(model_file=str(base))
    (ids,) = base_token_ids(base, ["天气"])
    assert sp.decode(ids) == "天气" and sp.id_to_piece(ids[0]) != "\u2581"


def test_model_with_padding_rows_is_refused(trained_models):
    base = trained_models["bpe_bytefallback"]
    ext = extend(base, ["越来越"])
    model = tiny_llama(ext.base_size + 8, tied=False)
    with pytest.raises(InvalidArgumentError, match="padding"):
        resize_embeddings(model, base, ext)


def test_stories260k_extended_generates_with_new_pieces():
    folder = require_shared(STORIES)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder))
    base = folder / "tokenizer.model"
    ext = extend(base, ["越来越", "中文"])
    assert ext.unreachable == ()
    before = model.get_input_embeddings().weight.detach().clone()
    resize_embeddings(model, base, ext)
    assert torch.equal(model.get_input_embeddings().weight[: ext.base_size], before)
    ids = torch.tensor([[1] + list(ext.tokenizer().encode("越来越 中文"))])
    assert int(ids.max()) >= ext.base_size
    out = model(ids)
    assert out.logits.shape[-1] == ext.vocab_size and torch.isfinite(out.logits).all()
