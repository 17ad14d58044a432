-- The newest event id each user marked as read in the app's notifications.
ALTER TABLE users ADD COLUMN notifications_read_up_to BIGINT NOT NULL DEFAULT 0;
