"""Sampling, prompts, readable text, `generate`, `score`, neighbours and the sampling study."""

import math

import pytest
import torch


def test_top_k_and_top_p_keep_the_right_words(nb):
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(nb.filter_logits(logits, top_k=2)).tolist() == [
        [True, True, False, False]
    ]
    assert torch.isfinite(nb.filter_logits(logits, top_p=0.75)).tolist() == [
        [True, True, False, False]
    ]
    assert torch.isfinite(nb.filter_logits(logits, top_p=0.81)).tolist() == [
        [True, True, True, False]
    ]
    assert torch.isfinite(nb.filter_logits(logits, top_p=0.1)).sum() == 1  # the top word, always


@pytest.mark.parametrize(
    "bad",
    [
        dict(num_words=-1),
        dict(temperature=0),
        dict(temperature=float("nan")),
        dict(top_k=0),
        dict(top_p=1.5),
        dict(num_words=True),
    ],
)
def test_bad_sampling_settings_are_refused(nb, trained_tiny, tiny_vocab, bad):
    settings = dict(num_words=5, temperature=1.0) | bad
    top = {key: settings.pop(key) for key in ("top_k", "top_p") if key in settings}
    with pytest.raises(ValueError, match=next(iter(bad))):
        nb.generate(trained_tiny, tiny_vocab, "the river", **settings, **top)


def test_typed_text_becomes_wikitext_tokens(nb):
    tokens = nb.wikitext_tokenize("A state-of-the-art 1,000.5 km road, isn't it?\nNew line")
    assert tokens == [
        "A",
        "state",
        "@-@",
        "of",
        "@-@",
        "the",
        "@-@",
        "art",
        "1",
        "@,@",
        "000",
        "@.@",
        "5",
        "km",
        "road",
        ",",
        "is",
        "n't",
        "it",
        "?",
        "<eos>",
        "New",
        "line",
    ]
    assert nb.wikitext_tokenize("the U.S. army", known={"U.S."}) == ["the", "U.S.", "army"]
    assert nb.wikitext_tokenize("the U.S. army") == ["the", "U", ".", "S", ".", "army"]


def test_prompt_words_are_tried_in_other_cases_before_unk(nb, tiny_vocab):
    tokens, ids, unknown = nb.prepare_prompt(tiny_vocab, "harrow creek zebra")  # "creek" is known
    assert tiny_vocab.decode(ids) == ["Harrow", "creek", "<unk>"] and unknown == ["zebra"]
    with pytest.raises(ValueError, match="string"):
        nb.prepare_prompt(tiny_vocab, None)


def test_detokenize_reads_like_text(nb):
    tokens = 'He said " it is n\'t 1 @,@ 000 km ( long ) " . <eos> = = Next = ='.split()
    assert nb.detokenize(tokens) == 'He said "it isn\'t 1,000 km (long)".\n= = Next = ='


class LovesUnk(torch.nn.Module):
    """The trained model, but with <unk> the likeliest next word by far."""

    def __init__(self, model, unk_id):
        super().__init__()
        self.model, self.unk_id = model, unk_id

    def next_log_probs(self, ids, hidden=None):
        log_probs, hidden = self.model.next_log_probs(ids, hidden)
        return log_probs.index_fill(-1, torch.tensor([self.unk_id]), 0.0), hidden


def test_generate_repeats_with_a_seed_and_never_writes_unk(nb, trained_tiny, tiny_vocab):
    model = LovesUnk(trained_tiny, tiny_vocab.unk_id)
    one = nb.generate(model, tiny_vocab, "The river", 40, 1.0, seed=3)
    assert one == nb.generate(model, tiny_vocab, "The river", 40, 1.0, seed=3)
    assert one != nb.generate(model, tiny_vocab, "The river", 40, 1.0, seed=4)
    assert "<unk>" not in one and one.startswith("The river")
    assert "<unk>" in nb.generate(model, tiny_vocab, "The river", 40, 1.0, seed=3, ban_unk=False)


def test_an_empty_prompt_starts_at_a_line_start(nb, trained_tiny, tiny_vocab, monkeypatch):
    contexts = []

    def spy(model, prompt_ids, *args, **kwargs):
        contexts.append(prompt_ids)
        return nb.sample_continuations(model, prompt_ids, *args, **kwargs)

    monkeypatch.setitem(nb.generate.__globals__, "sample_continuations", spy)
    text = nb.generate(trained_tiny, tiny_vocab, "", 10, seed=1)
    assert contexts == [[tiny_vocab.eos_id]] and len(text.split()) > 0


def test_sampled_log_probs_are_the_model_s(nb, trained_tiny, tiny_vocab):
    prompt = [tiny_vocab.eos_id, *tiny_vocab.encode(["The"])]
    generator = torch.Generator().manual_seed(0)
    drawn, log_probs = nb.sample_continuations(trained_tiny, prompt, 3, 5, 0.7, generator=generator)
    assert drawn.shape == log_probs.shape == (3, 5)
    context = torch.tensor([prompt] * 3)
    full = torch.cat([context, drawn], 1)  # (3, prompt + 5)
    with torch.no_grad():
        expected, _ = trained_tiny.log_probs(full[:, :-1], full[:, 1:])
    assert torch.allclose(log_probs, expected[:, -5:], atol=1e-5)  # at T = 1, whatever T drew them
    none = nb.sample_continuations(trained_tiny, prompt, 2, 0)
    assert none[0].shape == none[1].shape == (2, 0)


def test_score_and_neighbours(nb, trained_tiny, tiny_vocab):
    result = nb.score(trained_tiny, tiny_vocab, "The river flows")
    assert result["tokens"] == ["The", "river", "flows"] and len(result["log_probs"]) == 3
    assert result["perplexity"] == pytest.approx(math.exp(-sum(result["log_probs"]) / 3))
    neighbours = nb.nearest_neighbours(trained_tiny, tiny_vocab, "river", k=3)
    assert len(neighbours) == 3 and "river" not in [word for word, _ in neighbours]
    assert all(-1 <= cosine <= 1 for _, cosine in neighbours)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        nb.nearest_neighbours(trained_tiny, tiny_vocab, "zebra")


def test_text_statistics(nb):
    assert nb.text_statistics(["a b a b".split()], [0.0])["distinct_1"] == 0.5
    assert nb.repetition_rate("a b c a b c".split()) == 1 / 4  # "a b c" once more, of 4 3-grams
    stats = nb.text_statistics([["a", "b"]], [math.log(0.5)] * 2)
    assert stats["model_ppl"] == pytest.approx(2.0)


def test_real_text_is_scored_after_its_warm_up(nb, trained_tiny, tiny_vocab, tiny_corpus):
    ids = torch.tensor(tiny_vocab.encode(tiny_corpus["train"]))
    stats = nb.real_text_statistics(trained_tiny, tiny_vocab, ids, 4, 10, context=5, seed=0)
    start = torch.randint(len(ids) - 16, (4,), generator=torch.Generator().manual_seed(0))[0]
    window = ids[start : start + 16][None]  # (1, 16)
    with torch.no_grad():
        log_probs, _ = trained_tiny.log_probs(window[:, :-1], window[:, 1:])
    assert 1 < stats["model_ppl"] < len(tiny_vocab)
    one = nb.real_text_statistics(trained_tiny, tiny_vocab, ids, 1, 10, context=5, seed=0)
    assert one["model_ppl"] == pytest.approx(math.exp(-log_probs[0, 5:].mean().item()), rel=1e-5)
