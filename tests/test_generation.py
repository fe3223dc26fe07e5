"""generate(), sampling filters, prompt handling, detokenisation, score()."""

import math
import warnings

import pytest
import torch


def test_same_seed_same_text_and_different_seeds_differ(nb, trained_tiny, tiny_vocab):
    first = nb.generate(trained_tiny, tiny_vocab, "The town", 30, seed=5)
    assert first == nb.generate(trained_tiny, tiny_vocab, "The town", 30, seed=5)
    others = {nb.generate(trained_tiny, tiny_vocab, "The town", 30, seed=s) for s in range(6, 10)}
    assert first not in others and len(others) > 1


def test_generate_returns_prompt_plus_num_words(nb, trained_tiny, tiny_vocab):
    text = nb.generate(trained_tiny, tiny_vocab, "The lake", 25, seed=1, temperature=1.0)
    assert text.startswith("The lake")
    assert nb.generate(trained_tiny, tiny_vocab, "The lake", 0, seed=1) == "The lake"
    ids, _ = nb.sample_continuations(
        trained_tiny, [tiny_vocab.eos_id], 3, 25, generator=torch.Generator().manual_seed(0)
    )
    assert ids.shape == (3, 25)


def test_generation_does_not_change_the_global_random_state(nb, trained_tiny, tiny_vocab):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    nb.generate(trained_tiny, tiny_vocab, "The lake", 10, seed=1)
    assert torch.equal(torch.rand(3), expected)


def test_ban_unk_never_samples_unk(nb, trained_tiny, tiny_vocab):
    prompt = [
        tiny_vocab.eos_id,
        tiny_vocab.stoi["the"],
        tiny_vocab.stoi["village"],
        tiny_vocab.stoi["of"],
    ]
    generator = torch.Generator().manual_seed(0)
    free, _ = nb.sample_continuations(
        trained_tiny, prompt, 200, 1, temperature=1.5, generator=generator
    )
    assert (free == tiny_vocab.unk_id).any()  # the model does like <unk> here ...
    banned, _ = nb.sample_continuations(
        trained_tiny,
        prompt,
        200,
        30,
        temperature=1.5,
        generator=generator,
        banned_ids=[tiny_vocab.unk_id],
    )
    assert not (banned == tiny_vocab.unk_id).any()  # ... but never produces it when banned
    assert "<unk>" not in nb.generate(trained_tiny, tiny_vocab, "the village of", 200, 1.5, seed=0)


def test_top_k_1_is_greedy_decoding(nb, trained_tiny, tiny_vocab):
    prompt = [tiny_vocab.eos_id] + tiny_vocab.encode(["The", "creek"])
    ids, _ = nb.sample_continuations(
        trained_tiny,
        prompt,
        4,
        15,
        temperature=1.0,
        top_k=1,
        generator=torch.Generator().manual_seed(0),
    )
    greedy, hidden = [], None
    with torch.no_grad():
        logits, hidden = trained_tiny(torch.tensor([prompt]))
        for _ in range(15):
            next_id = int(logits[0, -1].argmax())
            greedy.append(next_id)
            logits, hidden = trained_tiny(torch.tensor([[next_id]]), hidden)
    assert all(row == greedy for row in ids.tolist())


def test_top_p_keeps_the_smallest_set_reaching_p(nb):
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()

    def kept(p):
        return torch.isfinite(nb.filter_logits(logits, top_p=p)).squeeze(0).tolist()

    assert kept(0.5) == [True, False, False, False]  # 0.5 alone reaches 0.5
    assert kept(0.6) == [True, True, False, False]  # 0.5 + 0.3 = 0.8 >= 0.6
    assert kept(0.95) == [True, True, True, False]
    assert kept(1.0) == [True, True, True, True]
    shuffled = logits[:, [2, 0, 3, 1]]  # order in the vocabulary does not matter
    assert torch.isfinite(nb.filter_logits(shuffled, top_p=0.6)).squeeze(0).tolist() == [
        False,
        True,
        False,
        True,
    ]


def test_top_k_keeps_exactly_k(nb):
    logits = torch.tensor([[1.0, 3.0, 2.0, 3.0, 0.0]])
    assert torch.isfinite(nb.filter_logits(logits, top_k=2)).sum() == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=0), "temperature"),
        (dict(temperature=-1.0), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(temperature=float("inf")), "temperature"),
        (dict(num_words=-1), "num_words"),
        (dict(num_words=2.5), "num_words"),
        (dict(top_k=0), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
    ],
)
def test_bad_sampling_arguments_raise_value_error(nb, trained_tiny, tiny_vocab, kwargs, message):
    args = dict(num_words=5, temperature=1.0) | kwargs
    with pytest.raises(ValueError, match=message):
        nb.generate(
            trained_tiny,
            tiny_vocab,
            "The town",
            args.pop("num_words"),
            args.pop("temperature"),
            **args,
        )


def test_empty_prompt_starts_at_a_line_start(nb, trained_tiny, tiny_vocab):
    text = nb.generate(trained_tiny, tiny_vocab, "", 20, seed=3)
    assert len(text) > 0
    with pytest.raises(ValueError, match="string"):
        nb.generate(trained_tiny, tiny_vocab, None, 5)


def test_unknown_words_are_tried_in_other_cases_then_reported(nb, tiny_vocab, trained_tiny, capsys):
    tokens, ids, unknown = nb.prepare_prompt(tiny_vocab, "harrow creek and ST the zebra")
    assert "harrow" not in tiny_vocab.stoi and ids[0] == tiny_vocab.stoi["Harrow"]
    assert (
        ids[1] == tiny_vocab.stoi["creek"] and ids[3] == tiny_vocab.stoi["St"]
    )  # as typed when it exists
    assert tokens[0] == "harrow"  # the text shown is what the user typed
    assert unknown == ["zebra"] and ids[-1] == tiny_vocab.unk_id
    nb.generate(trained_tiny, tiny_vocab, "the zebra", 3, seed=0)
    assert "read as <unk>: zebra" in capsys.readouterr().out
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nb.generate(trained_tiny, tiny_vocab, "the town", 3, seed=0)
    assert capsys.readouterr().out == ""  # nothing unknown: nothing said


def test_dotted_words_stay_one_token_when_the_vocabulary_has_them(nb):
    vocab = nb.Vocabulary(
        [
            "<eos>",
            "<unk>",
            "the",
            "U.S.",
            "Army",
            "Mr.",
            "Smith",
            "St.",
            "Louis",
            "e.g.",
            ".",
            ",",
            "end",
            "U",
            "S",
        ]
    )
    tokens, ids, unknown = nb.prepare_prompt(
        vocab, "The U.S. Army, e.g. Mr. Smith of St. Louis. The end."
    )
    assert tokens == [
        "The",
        "U.S.",
        "Army",
        ",",
        "e.g.",
        "Mr.",
        "Smith",
        "of",
        "St.",
        "Louis",
        ".",
        "The",
        "end",
        ".",
    ]
    assert unknown == ["of"] and ids[1] == vocab.stoi["U.S."]
    assert (
        nb.prepare_prompt(vocab, "the u.s. army")[0][1] == "u.s."
    )  # any casing the vocabulary knows
    plain = nb.Vocabulary(["<eos>", "<unk>", "U", "S", "."])  # no dotted forms: split as before
    assert nb.prepare_prompt(plain, "U.S.")[0] == ["U", ".", "S", "."]
    assert nb.wikitext_tokenize("Mr. Smith") == ["Mr", ".", "Smith"]  # without a vocabulary


def test_wikitext_tokenize_matches_the_dataset_conventions(nb):
    assert nb.wikitext_tokenize(
        "A state-of-the-art town, isn't it? It cost 1,200.5 pounds (in 1996)."
    ) == [
        "A",
        "state",
        "@-@",
        "of",
        "@-@",
        "the",
        "@-@",
        "art",
        "town",
        ",",
        "is",
        "n't",
        "it",
        "?",
        "It",
        "cost",
        "1",
        "@,@",
        "200",
        "@.@",
        "5",
        "pounds",
        "(",
        "in",
        "1996",
        ")",
        ".",
    ]
    assert nb.wikitext_tokenize("one\ntwo") == ["one", "<eos>", "two"]


def test_detokenize_undoes_wikitext_markers(nb):
    tokens = (
        "The state @-@ of @-@ the @-@ art bridge ( built in 1 @,@ 652 ) cost 2 @.@ 5 pounds , "
        "and \" Harrow Water \" is n't the band 's song . <eos> = = History = ="
    ).split()
    assert nb.detokenize(tokens) == (
        "The state-of-the-art bridge (built in 1,652) cost 2.5 pounds, "
        "and \"Harrow Water\" isn't the band's song.\n= = History = ="
    )


def test_score_prefers_a_fluent_sentence_to_a_shuffled_one(nb, trained_tiny, tiny_vocab):
    fluent = nb.score(trained_tiny, tiny_vocab, "The church is the oldest building in the town .")
    shuffled = nb.score(trained_tiny, tiny_vocab, "building town oldest . The in is the church the")
    assert len(fluent["log_probs"]) == 10 and all(lp <= 0 for lp in fluent["log_probs"])
    assert fluent["perplexity"] == pytest.approx(math.exp(-sum(fluent["log_probs"]) / 10))
    assert fluent["perplexity"] < shuffled["perplexity"] / 3
    with pytest.raises(ValueError, match="at least one word"):
        nb.score(trained_tiny, tiny_vocab, "   ")


def test_text_statistics(nb):
    assert nb.distinct_n("a b a b".split(), 1) == 0.5
    assert nb.distinct_n("a b a b".split(), 2) == pytest.approx(2 / 3)
    assert nb.repetition_rate("a b c a b c".split()) == pytest.approx(
        1 / 4
    )  # "a b c" again, 1 of 4 trigrams


def test_nearest_neighbours(nb, trained_tiny, tiny_vocab):
    neighbours = nb.nearest_neighbours(trained_tiny, tiny_vocab, "town", k=3)
    assert len(neighbours) == 3 and "town" not in [w for w, _ in neighbours]
    with pytest.raises(ValueError, match="not in the vocabulary"):
        nb.nearest_neighbours(trained_tiny, tiny_vocab, "zebra")
