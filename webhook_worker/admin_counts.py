"""How the event list counts and pages without reading the whole events table.

- Counted: when every filter of the list is on a field the count tables have
  (status, category, type, endpoint, style, source) and the search, if any,
  is a type prefix, the number shown is exact and comes from `EventCount`.
- Bounded: otherwise (a search by id, the livemode, date or skipped filters)
  matches are counted up to LIST_LIMIT; past it the list shows LIST_LIMIT
  and a note says that more match.
- Either way the pages reach the newest LIST_LIMIT events of the selection
  (200 pages of 50): a deeper page would cost an OFFSET over everything
  before it. A date filter reaches older events.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from math import ceil
from typing import Any

from django.contrib.admin.views.main import ALL_VAR, ERROR_FLAG, ORDER_VAR, PAGE_VAR, SEARCH_VAR
from django.core.paginator import Paginator
from django.db.models import Q

from webhook_ingest import counts

from .admin_display import CategoryFilter, CountedFilter, EndpointFilter, StatusFilter, TypeFilter

LIST_LIMIT = 10_000

# Parameters of the list that select nothing.
# (Also the admin's popup, to-field and facets flags.)
NOT_FILTERS = {ALL_VAR, ERROR_FLAG, ORDER_VAR, PAGE_VAR, "_popup", "_to_field", "_facets"}
COUNTED_FILTERS: dict[str, type[CountedFilter]] = {
    f.parameter_name: f for f in (StatusFilter, CategoryFilter, TypeFilter, EndpointFilter)
}
# The choice filters Django makes for the fields with choices.
COUNTED_CHOICES = {"style__exact": "style", "source__exact": "source"}


def is_type_prefix(term: str) -> bool:
    """Whether a search term is the beginning of a stored event's type (else it is an id)."""
    return bool(counts.present("type", type__startswith=term))


def counted_condition(params: Mapping[str, str]) -> Q | None:
    """The condition on `EventCount` that counts the list selected by `params`,
    or None when a filter or the search is on something the counts do not have."""
    condition = Q()
    for name, value in params.items():
        if name in NOT_FILTERS or value == "":
            continue
        if name in COUNTED_FILTERS:
            condition &= COUNTED_FILTERS[name].counted(value)
        elif name in COUNTED_CHOICES:
            condition &= Q(**{COUNTED_CHOICES[name]: value})
        elif name == SEARCH_VAR:
            term = value.strip()
            if term and not is_type_prefix(term):
                return None
            if term:
                condition &= Q(type__startswith=term)
        else:
            return None
    return condition


class EventPaginator(Paginator):
    """Counts from the count tables when `counted` is given, else up to LIST_LIMIT;
    `capped` is then true when there are more. Pages stop at LIST_LIMIT events."""

    def __init__(
        self, object_list: Any, per_page: int, *args: Any, counted: Q | None, **kwargs: Any
    ) -> None:
        super().__init__(object_list, per_page, *args, **kwargs)
        self.queryset = object_list
        self.counted = counted
        self.limit = LIST_LIMIT
        self.capped = False

    @cached_property
    def count(self) -> int:
        if self.counted is not None:
            return counts.total(self.counted)
        found = int(self.queryset[: self.limit + 1].count())
        self.capped = found > self.limit
        return min(found, self.limit)

    @cached_property
    def num_pages(self) -> int:
        if self.count == 0 and not self.allow_empty_first_page:
            return 0
        pages = ceil(max(1, self.count - self.orphans) / self.per_page)
        return min(pages, max(1, self.limit // self.per_page))
