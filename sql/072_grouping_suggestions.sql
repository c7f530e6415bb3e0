-- Migration: 072_grouping_suggestions.sql
-- Auto-grouping suggestions (B.9), kept small as SPEC §3 asks.

CREATE TABLE IF NOT EXISTS grouping_suggestions (
  id TEXT PRIMARY KEY,
  suggested_name TEXT NOT NULL,
  suggested_tasks TEXT NOT NULL,  -- JSON: list of task ids
  grouping_reason TEXT,
  status TEXT NOT NULL DEFAULT 'pending',
  created_at TEXT NOT NULL DEFAULT (datetime('now')),

  CONSTRAINT valid_suggestion_status CHECK (status IN ('pending', 'accepted', 'rejected', 'expired'))
);
