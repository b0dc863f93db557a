//! Kafka partition ownership in the engine's database, shared by every
//! replica ([`telemetry::kafka::PartitionOwner`]): each partition is leased to
//! one member; the live members (those that renewed within a lease) split the
//! partitions fairly, a member over its share gives the excess back, and a
//! killed member's partitions are taken over once its lease lapses. A member
//! restarted under the same instance id (`SENTINEL_INSTANCE_ID`) takes its
//! partitions back at once.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use engine::Store;
use sqlx::Row;
use telemetry::kafka::PartitionOwner;

pub struct SqlPartitionOwner {
    store: Store,
    group: String,
    member: String,
}

impl SqlPartitionOwner {
    /// The tables come with the API's migrations ([`crate::access::Access::new`]).
    pub fn new(store: Store, group: impl Into<String>, member: impl Into<String>) -> Self {
        SqlPartitionOwner { store, group: group.into(), member: member.into() }
    }

    pub fn member(&self) -> &str {
        &self.member
    }

    async fn partition_rows(&self, topic: &str, partitions: i32) -> Result<Vec<sqlx::any::AnyRow>, String> {
        sqlx::query(
            "SELECT partition_no, owner, lease_until FROM partition_owners
             WHERE consumer_group = $1 AND topic = $2 AND partition_no < $3 ORDER BY partition_no",
        )
        .bind(&self.group)
        .bind(topic)
        .bind(partitions)
        .fetch_all(self.store.pool())
        .await
        .map_err(db)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn db(e: sqlx::Error) -> String {
    format!("partition leases: {e}")
}

#[async_trait]
impl PartitionOwner for SqlPartitionOwner {
    async fn claim(&self, topic: &str, partitions: i32, lease: Duration) -> Result<BTreeSet<i32>, String> {
        let pool = self.store.pool();
        let now = now_ms();
        let until = now + lease.as_millis() as i64;
        sqlx::query(
            "INSERT INTO consumer_members (consumer_group, member, seen_until) VALUES ($1, $2, $3)
             ON CONFLICT (consumer_group, member) DO UPDATE SET seen_until = $3",
        )
        .bind(&self.group)
        .bind(&self.member)
        .bind(until)
        .execute(pool)
        .await
        .map_err(db)?;
        sqlx::query("DELETE FROM consumer_members WHERE consumer_group = $1 AND seen_until < $2")
            .bind(&self.group)
            .bind(now)
            .execute(pool)
            .await
            .map_err(db)?;
        let live: i64 = sqlx::query("SELECT COUNT(*) FROM consumer_members WHERE consumer_group = $1")
            .bind(&self.group)
            .fetch_one(pool)
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        // Renew what is still ours (a lease that lapsed may be someone else's now).
        sqlx::query(
            "UPDATE partition_owners SET lease_until = $4
             WHERE consumer_group = $1 AND topic = $2 AND owner = $3 AND lease_until >= $5",
        )
        .bind(&self.group)
        .bind(topic)
        .bind(&self.member)
        .bind(until)
        .bind(now)
        .execute(pool)
        .await
        .map_err(db)?;
        let mut rows = self.partition_rows(topic, partitions).await?;
        if rows.len() < partitions as usize {
            // First sight of the topic (or of new partitions): one row each, then read again.
            for p in 0..partitions {
                sqlx::query(
                    "INSERT INTO partition_owners (consumer_group, topic, partition_no, owner, lease_until)
                     VALUES ($1, $2, $3, NULL, 0) ON CONFLICT (consumer_group, topic, partition_no) DO NOTHING",
                )
                .bind(&self.group)
                .bind(topic)
                .bind(p)
                .execute(pool)
                .await
                .map_err(db)?;
            }
            rows = self.partition_rows(topic, partitions).await?;
        }
        let mut mine = BTreeSet::new();
        let mut free = Vec::new();
        for row in rows {
            let p: i32 = row.try_get(0).map_err(db)?;
            let owner: Option<String> = row.try_get(1).map_err(db)?;
            let lease_until: i64 = row.try_get(2).map_err(db)?;
            if owner.as_deref() == Some(self.member.as_str()) && lease_until >= now {
                mine.insert(p);
            } else if owner.is_none() || lease_until < now {
                free.push(p);
            }
        }
        let share = (partitions as i64 + live.max(1) - 1) / live.max(1);
        // Over the share (a member joined): give back the excess, highest first.
        while mine.len() as i64 > share {
            let Some(p) = mine.pop_last() else { break };
            sqlx::query(
                "UPDATE partition_owners SET owner = NULL, lease_until = 0
                 WHERE consumer_group = $1 AND topic = $2 AND partition_no = $3 AND owner = $4",
            )
            .bind(&self.group)
            .bind(topic)
            .bind(p)
            .bind(&self.member)
            .execute(pool)
            .await
            .map_err(db)?;
        }
        // Under it: take free or lapsed partitions, one conditional update each.
        for p in free {
            if mine.len() as i64 >= share {
                break;
            }
            let taken = sqlx::query(
                "UPDATE partition_owners SET owner = $4, lease_until = $5
                 WHERE consumer_group = $1 AND topic = $2 AND partition_no = $3
                   AND (owner IS NULL OR lease_until < $6)",
            )
            .bind(&self.group)
            .bind(topic)
            .bind(p)
            .bind(&self.member)
            .bind(until)
            .bind(now)
            .execute(pool)
            .await
            .map_err(db)?
            .rows_affected();
            if taken == 1 {
                mine.insert(p);
            }
        }
        Ok(mine)
    }

    async fn release(&self, topic: &str) -> Result<(), String> {
        let pool = self.store.pool();
        sqlx::query(
            "UPDATE partition_owners SET owner = NULL, lease_until = 0
             WHERE consumer_group = $1 AND topic = $2 AND owner = $3",
        )
        .bind(&self.group)
        .bind(topic)
        .bind(&self.member)
        .execute(pool)
        .await
        .map_err(db)?;
        sqlx::query("DELETE FROM consumer_members WHERE consumer_group = $1 AND member = $2")
            .bind(&self.group)
            .bind(&self.member)
            .execute(pool)
            .await
            .map_err(db)?;
        Ok(())
    }
}
