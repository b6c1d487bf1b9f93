"""LLaVA names and directories route to the vision-language loader (`VisionLanguageModel`)."""

from __future__ import annotations

import torch

from interp.models.registry import describe_model_name


def test_names_route_to_vision():
    assert describe_model_name("shapes-llava").modality == "vision"
    assert describe_model_name("shapes-llava").kind == "bundled"
    hub = describe_model_name("llava-hf/llava-1.5-7b-hf")
    assert (hub.kind, hub.modality) == ("hub", "vision")
    assert describe_model_name("HuggingFaceTB/SmolLM2-135M").modality == "text"


def test_local_llava_directory_loads_through_load_model(tiny_llava, tokenizer, tmp_path, tiny_items):
    from transformers import CLIPImageProcessor

    from interp.models.loading import load_model
    from interp.models.vlm import VisionLanguageModel

    tiny_llava.hf_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(tmp_path)
    assert describe_model_name(str(tmp_path)).modality == "vision"
    model = load_model(str(tmp_path))
    assert isinstance(model, VisionLanguageModel) and model.spec == tiny_llava.spec
    pv = model.pixel_values([it.image for it in tiny_items[:2]])  # the directory's own (CLIP) preprocessing
    assert pv.shape == (2, 3, 28, 28)
    torch.testing.assert_close(model.image_features(pv), tiny_llava.image_features(pv))
    assert len(model.generate([tiny_items[0].image], [tiny_items[0].question], max_new_tokens=2)) == 1
