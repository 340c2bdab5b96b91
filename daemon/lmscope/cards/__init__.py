"""Interpretation cards of heads, neurons and blocks (`card`), and their Markdown (`markdown`)."""

from lmscope.cards.card import component_card
from lmscope.cards.markdown import card_markdown, md_text, md_token

__all__ = ["card_markdown", "component_card", "md_text", "md_token"]
