"""The configs of the database-side commands (campaign, users, db, audit, agreement,
export): each field explains itself, and the library's defaults are the command line's."""

import inspect

import pytest

from annotation_db.agreement_config import AgreementReportConfig
from annotation_db.audit_config import AuditListConfig
from annotation_db.backup_config import BackupConfig, RestoreConfig
from annotation_db.campaigns import create_campaign
from annotation_db.campaigns_config import (
    CampaignCreateConfig,
    CampaignSimulateConfig,
    CampaignStatusConfig,
)
from annotation_db.command_config import ConfigError
from annotation_db.export_config import ExportCreateConfig, ExportDeleteConfig, ExportPreviewConfig
from annotation_db.migrate_config import UpgradeConfig
from annotation_db.models import Role
from annotation_db.planner_config import PlanConfig
from annotation_db.simulate import simulate
from annotation_db.users_config import RoleName, UserAddConfig

CONFIGS = [CampaignCreateConfig, CampaignSimulateConfig, CampaignStatusConfig, PlanConfig,
           UserAddConfig, UpgradeConfig, BackupConfig, RestoreConfig, AuditListConfig,
           AgreementReportConfig, ExportPreviewConfig, ExportCreateConfig, ExportDeleteConfig]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.__name__)
def test_every_field_has_help_and_is_an_option(config):
    for name, field in config.model_fields.items():
        assert field.description, f"{config.__name__}.{name} needs a description (its help)"
        assert name in config.option_fields(), f"{config.__name__}.{name} is not an option"


def test_the_role_choices_are_the_roles():
    assert list(RoleName.__args__) == [role.value for role in Role]


def test_create_campaign_defaults_are_the_command_lines():
    defaults = {name: p.default for name, p in inspect.signature(create_campaign).parameters
                .items() if p.default is not inspect.Parameter.empty}
    for name, field in CampaignCreateConfig.model_fields.items():
        if name == "show_grounding":
            assert defaults["blind_grounding"] is not field.default
        elif not field.is_required():
            assert defaults[name] == field.default, name


def test_simulate_defaults_are_the_command_lines():
    defaults = inspect.signature(simulate).parameters
    fields = CampaignSimulateConfig.model_fields
    assert defaults["noise"].default == fields["noise"].default
    assert defaults["leniency_spread"].default == fields["leniency"].default
    assert defaults["claim_error"].default == fields["claim_error"].default
    assert defaults["seed"].default == fields["seed"].default


def test_simulate_and_create_share_the_campaign_design():
    shared = ("run", "k", "calibration", "gold_share", "claim_review")
    for name in shared:
        assert (CampaignSimulateConfig.model_fields[name].default
                == CampaignCreateConfig.model_fields[name].default)


@pytest.mark.parametrize("settings, message", [
    ({"run": [1], "annotators": "a,b", "k": 0}, "k: Input should be greater than or equal to 1"),
    ({"annotators": "a,b"}, "missing option --run (or run: in the --config file)"),
    ({"run": [1], "annotators": "a", "assignment": "random"}, "assignment: Input should be"),
])
def test_campaign_create_settings_are_checked_before_any_database_work(settings, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CampaignCreateConfig.load(**settings)


def test_a_simulated_claim_error_is_a_probability():
    with pytest.raises(ConfigError, match="claim_error: Input should be less than or equal"):
        CampaignSimulateConfig.load(run=[1], claim_error=1.5)


def test_plan_reads_its_comma_separated_lists():
    cfg = PlanConfig(raters="2, 3", distribution="0.1,0.2,0.3,0.2,0.2")
    assert cfg.rater_counts() == [2, 3]
    assert cfg.score_shares() == [0.1, 0.2, 0.3, 0.2, 0.2]
    assert PlanConfig().score_shares() is None
    with pytest.raises(ValueError):
        PlanConfig(raters="two").rater_counts()
