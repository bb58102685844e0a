"""The request bodies of the routes, as their anchors define them, so that their clients work
unchanged: OpenAI's embeddings API, text-embeddings-inference's /embed, /similarity and
/rerank; /predict and /search are ours. Strings are strict (a number is not a sentence); fields a
route does not use are ignored."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from sbert.data.readers import blank


def _not_blank(text: str) -> str:
    if blank(text):  # the readers' rule: spaces, controls, zero-width characters only
        raise ValueError("an empty text: give at least one word")
    return text


Text = Annotated[StrictStr, AfterValidator(_not_blank)]
Texts = Text | Annotated[list[Text], Field(min_length=1)]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class OpenAIEmbeddings(Body):
    """POST /v1/embeddings (OpenAI)."""

    input: Texts
    model: StrictStr | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = Field(None, ge=1)
    user: StrictStr | None = None


class Embed(Body):
    """POST /embed (text-embeddings-inference)."""

    inputs: Texts
    normalize: StrictBool = True
    truncate: StrictBool = True  # TEI's default is false; a user of ours expects the window


class SimilarityInputs(Body):
    source_sentence: Text
    sentences: Annotated[list[Text], Field(min_length=1)]


class Similarity(Body):
    """POST /similarity (text-embeddings-inference)."""

    inputs: SimilarityInputs
    truncate: StrictBool = True


class Rerank(Body):
    """POST /rerank (text-embeddings-inference's shape; scores are cosine similarities)."""

    query: Text
    texts: Annotated[list[Text], Field(min_length=1)]
    return_text: StrictBool = False
    truncate: StrictBool = True


Pair = tuple[Text, Text]


class Predict(Body):
    """POST /predict: sentence pairs for both heads (one pair, or a list of pairs)."""

    inputs: Pair | Annotated[list[Pair], Field(min_length=1)]
    truncate: StrictBool = True


class Search(Body):
    """POST /search: the top-k texts of the served index for each query."""

    queries: Texts
    k: StrictInt = Field(10, ge=1)
    truncate: StrictBool = True
