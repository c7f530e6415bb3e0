-- Migration: 072_grouping_suggestions.sql (PostgreSQL dialect; conventions in 010)
-- Auto-grouping suggestions (B.9), kept small as SPEC §3 asks.

CREATE TABLE IF NOT EXISTS grouping_suggestions (
  id text COLLATE "C" PRIMARY KEY,
  suggested_name text COLLATE "C" NOT NULL,
  suggested_tasks text COLLATE "C" NOT NULL,  -- JSON: list of task ids
  grouping_reason text COLLATE "C",
  status text COLLATE "C" NOT NULL DEFAULT 'pending',
  created_at timestamptz NOT NULL DEFAULT now(),

  CONSTRAINT valid_suggestion_status CHECK (status IN ('pending', 'accepted', 'rejected', 'expired'))
);
