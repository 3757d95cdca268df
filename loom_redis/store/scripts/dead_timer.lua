-- Move a corrupt timer member to the dead-letter stream with the reason, once: removing
-- the member is the claim, so two sweepers never park it twice.
-- KEYS: timers, dead
-- ARGV: member, reason
expect_types({KEYS[1], 'zset', KEYS[2], 'stream'})
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 'gone' end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '100000', '*',
  'reason', ARGV[2], 'queue', KEYS[1], 'timer', ARGV[1])
return 'ok'
