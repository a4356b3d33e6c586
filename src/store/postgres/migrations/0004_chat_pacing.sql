-- Telegram pacing shared by the instances: a chat's next message is claimed only once the
-- chat's last sent message is a pacing interval old. This index finds that last message.
CREATE INDEX deliveries_sent_lane ON deliveries (lane, updated_at)
  WHERE state = 'sent' AND lane <> '';
