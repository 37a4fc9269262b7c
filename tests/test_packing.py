"""Prefix trees packed into rows: the layout, the mask, and scores equal to one padded row per request."""
import pytest

from phi_eval.models.packing import Tree, lay_out, pack


def test_a_pass_is_as_wide_as_its_largest_item_and_small_items_fill_its_rows():
    sizes = [5, 3, 7, 2, 4, 1, 6]
    rows = pack(sizes, 2)
    assert sorted(i for row in rows for i in row) == list(range(7))
    assert rows == [[2], [6, 5], [0], [4], [1], [3]]  # widths 7 (7; 6+1), 5 (5; 4), 3 (3; 2)


def test_a_tail_sees_its_prefix_and_itself_but_not_its_sibling_or_the_next_tree():
    trees = [Tree([1, 2], [[3], [4, 5]]), Tree([6], [[]])]
    layout = lay_out(trees, [[0, 1]], pad_id=0)
    assert layout.input_ids.tolist() == [[1, 2, 3, 4, 5, 6]]
    assert layout.position_ids.tolist() == [[0, 1, 2, 2, 3, 0]]
    assert layout.starts == {0: (0, 0), 1: (0, 5)}
    allowed = layout.allowed[0, 0].int().tolist()
    assert allowed == [[1, 0, 0, 0, 0, 0],
                       [1, 1, 0, 0, 0, 0],
                       [1, 1, 1, 0, 0, 0],   # member 0's tail: prefix + itself
                       [1, 1, 0, 1, 0, 0],   # member 1's tail skips member 0's
                       [1, 1, 0, 1, 1, 0],
                       [0, 0, 0, 0, 0, 1]]   # the next tree starts afresh
    assert [trees[0].column(1, p) for p in range(4)] == [0, 1, 3, 4]


def test_padding_attends_only_to_itself():
    layout = lay_out([Tree([1, 2, 3], []), Tree([4], [])], [[0], [1]], pad_id=9)
    assert layout.input_ids.tolist() == [[1, 2, 3], [4, 9, 9]]
    assert layout.allowed[1, 0].int().tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_scores_equal_one_padded_row_per_request(attention, tiny_phi_dir):
    from tqdm import tqdm

    from phi_eval.models.hf import HFModel

    model = HFModel(str(tiny_phi_dir), name="tiny", device="cpu", dtype="float32", batch_size=3)
    model.model.config._attn_implementation = attention
    pairs = [(f"Question {q}: which is it?\nAnswer:", f" {x}") for q in range(5) for x in ("yes", "no way", "maybe so")]
    pairs += [("A long and winding context about nothing in particular", " and then some more words"), ("", "hi")]
    requests = [model._split_pair(c, x) for c, x in pairs]
    trees, alone = model._trees(requests)
    assert len(trees) == 7 and alone == []
    ours = model.loglikelihood(pairs, progress=False)
    rows = model._score_tokens(requests, tqdm(disable=True))
    assert [greedy for _, greedy in ours] == [greedy for _, greedy in rows]
    assert [ll for ll, _ in ours] == pytest.approx([ll for ll, _ in rows], abs=1e-4)
