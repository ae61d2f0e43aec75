"""The Duplicates page's parts: the search kept in the session, one module per tab, and the thumbnail cards.

The search, the regrouping, the leak report, the cleaning plan and the quality checks are core's
(``core.dedup``); these modules keep their results in the session and draw them.
"""
