"""Former home of the card table, now energybench.device.cards (one table for memory, bandwidth and power)."""

from energybench.device.cards import CARDS, Card, card_for, cards_table, known_cards  # noqa: F401
