from trainlint.rules.base import Rule


class R(Rule):
    """(work in progress)"""

    code = "TL401"
    name = "unshuffled-train-loader"

    def check(self, ctx):
        return iter(())


RULE = R
