-- Truncated recordings: a disk that filled up mid-call keeps the audio written so far, flagged with the reason.

-- Why the recording's audio ends before its call did (the recordings disk was full); NULL when
-- it covers the whole call.
ALTER TABLE recordings ADD COLUMN truncated_reason text;
-- 'pcm': the sealed raw stream kept as the final file when there was no room to encode it
-- (downloaded as WAV).
ALTER TABLE recordings DROP CONSTRAINT recordings_format_check;
ALTER TABLE recordings ADD CONSTRAINT recordings_format_check
    CHECK (format IN ('flac', 'wav', 'pcm'));
-- The same reason on the call, so the call log shows it without reading the recording.
ALTER TABLE calls ADD COLUMN recording_truncated_reason text;
